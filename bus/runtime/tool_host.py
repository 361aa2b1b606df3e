"""The tool host: the trusted executor of side effects.

It answers ``<prefix>.tool.<name>`` requests from the runtime (agents cannot
publish there). Each call carries an idempotency key; the host journals the
result under that key before replying, so a retry after a timeout returns the
first result instead of sending a second email. It runs only calls the runtime
signed that have not expired (:mod:`bus.transport.signing`): whatever else reaches
its subjects, a push consumer's redirected delivery say, is refused.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import ValidationError

from bus import telemetry
from bus.runtime.catalogue import CATALOGUE, Tool, ToolFailure
from bus.settings import Settings
from bus.transport.signing import Verifier, runtime_verifier, signed_bytes
from bus.transport.subjects import Subjects
from handoff_schemas import FieldError, SchemaError, ToolCall, ToolResult, decode, encode

log = logging.getLogger(__name__)


class Journal:
    """Results by idempotency key, in a SQLite file of the tool host's own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, result BLOB)")

    def get(self, key: str) -> bytes | None:
        with sqlite3.connect(self.path) as db:
            row = db.execute("SELECT result FROM calls WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, result: bytes) -> None:
        with sqlite3.connect(self.path) as db:
            db.execute("INSERT OR IGNORE INTO calls (key, result) VALUES (?, ?)", (key, result))


def pydantic_field_errors(error: ValidationError) -> list[FieldError]:
    return [
        FieldError(field=".".join(str(p) for p in problem["loc"]) or "$", message=problem["msg"])
        for problem in error.errors()
    ]


class ToolHost:
    def __init__(self, settings: Settings, tools: list[Tool] | None = None) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.prefix)
        self.tools = {t.name: t for t in tools or [cls(settings) for cls in CATALOGUE.values()]}
        self.journal = Journal(settings.state_dir / "tool_journal.db")
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._tasks: set[asyncio.Task[None]] = set()
        self._verifier: Verifier | None = None

    async def serve(self, nc: Client) -> None:
        for name in self.tools:
            await nc.subscribe(self.subjects.tool(name), queue="tool-hosts", cb=self._on_call)
        await nc.flush()

    async def _on_call(self, msg: Msg) -> None:
        # One task per call: a slow SMTP server must not hold up every other call.
        task = asyncio.create_task(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Msg) -> None:
        tool = self.tools[msg.subject.rsplit(".", 1)[-1]]
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool.name}
        with telemetry.span(f"execute_tool {tool.name}", msg.headers, kind="SERVER", **attributes):
            await self._answer_call(msg, tool)

    async def _answer_call(self, msg: Msg, tool: Tool) -> None:
        try:
            call = decode(msg.data, ToolCall)
        except SchemaError as error:
            reply = encode(
                ToolResult(status="invalid_payload", error=str(error), fields=error.fields)
            )
        else:
            refused = self.refusal(msg.data, call)
            reply = encode(refused) if refused is not None else await self.call(tool, call)
        if msg.reply:  # a push consumer's delivery has none
            await msg.respond(reply)

    def refusal(self, data: bytes, call: ToolCall) -> ToolResult | None:
        """Why this call must not run: not signed by the runtime's key, or expired.

        Checked before the journal, so a forged call can neither run nor poison the
        result recorded under a real call's idempotency key.
        """
        if self._verifier is None:
            self._verifier = runtime_verifier(self.settings)
        if self._verifier is None:  # the runtime has not published its key yet
            return ToolResult(
                status="failed", error="refused: the runtime's key is unknown", transient=True
            )
        problem = None
        if not self._verifier.verify(signed_bytes(msgspec.json.decode(data)), call.signature):
            problem = "not signed by the runtime"
        elif call.expires_at is None or call.expires_at < datetime.now(UTC):
            problem = f"expired at {call.expires_at}"
        if problem is None:
            return None
        log.warning("security: refused a %s call %r: %s", call.actor, call.idempotency_key, problem)
        return ToolResult(status="failed", error=f"refused: {problem}")

    async def call(self, tool: Tool, call: ToolCall) -> bytes:
        """Run ``call`` at most once per idempotency key; return the encoded result."""
        async with self._locks[call.idempotency_key]:
            recorded = await asyncio.to_thread(self.journal.get, call.idempotency_key)
            if recorded is not None:
                return recorded
            result = await self._run(tool, call)
            encoded = encode(result)
            if not (result.status == "failed" and result.transient):
                await asyncio.to_thread(self.journal.put, call.idempotency_key, encoded)
        self._locks.pop(call.idempotency_key, None)
        return encoded

    async def _run(self, tool: Tool, call: ToolCall) -> ToolResult:
        try:
            payload = tool.payload.model_validate(call.payload)
        except ValidationError as error:
            return ToolResult(
                status="invalid_payload",
                error="payload does not match the tool's schema",
                fields=pydantic_field_errors(error),
            )
        try:
            refs = await tool.run(payload, call.idempotency_key)
        except ToolFailure as failure:
            log.warning("%s failed for %s: %s", tool.name, call.idempotency_key, failure)
            return ToolResult(status="failed", error=str(failure), transient=failure.transient)
        log.info("%s executed for %s: %s", tool.name, call.idempotency_key, refs)
        return ToolResult(status="succeeded", refs=refs)
