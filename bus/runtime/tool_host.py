"""The tool host: the trusted executor of side effects.

It serves one or more :class:`~bus.runtime.catalogue.Catalogue` s: at start it
describes each tool in the deployment's registry (:mod:`bus.runtime.registry`), then
answers ``<prefix>.tool.<name>`` requests from the runtime (agents cannot publish
there). Each call carries an idempotency key; the host claims the key
in the journal every host of the deployment shares (:mod:`bus.runtime.journal`)
before acting and records the result under it, so a retry after a timeout, or
the same call on another host, returns the first result instead of sending a
second email. It runs only calls the
runtime signed that have not expired (:mod:`bus.transport.signing`): whatever else
reaches its subjects, a push consumer's redirected delivery say, is refused.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, ValidationError

from bus import telemetry
from bus.runtime.catalogue import Call, Catalogue, ToolFailure, ToolSpec
from bus.runtime.confirmation import check, tool_of
from bus.runtime.journal import SharedJournal
from bus.runtime.registry import register
from bus.settings import Settings
from bus.transport.connection import flushed
from bus.transport.signing import Verifier, runtime_verifier, signed_bytes
from bus.transport.subjects import Subjects
from handoff_schemas import (
    Evidence,
    FieldError,
    SchemaError,
    ToolCall,
    ToolResult,
    decode,
    encode,
)

log = logging.getLogger(__name__)


def pydantic_field_errors(error: ValidationError) -> list[FieldError]:
    return [
        FieldError(field=".".join(str(p) for p in problem["loc"]) or "$", message=problem["msg"])
        for problem in error.errors()
    ]


class ToolHost:
    def __init__(self, settings: Settings, catalogues: list[Catalogue]) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.prefix)
        self.catalogues = catalogues
        self.tools = {spec.name: spec for catalogue in catalogues for spec in catalogue}
        self.journal: SharedJournal | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscriptions: list[Subscription] = []
        self._verifier: Verifier | None = None

    async def serve(self, nc: Client) -> None:
        """Describe the tools, then answer their calls (``init`` made the journal and registry)."""
        self.journal = await SharedJournal.open(
            nc.jetstream(), self.subjects.journal_bucket, self.settings.tool_lease
        )
        descriptions = [spec.describe(c.name) for c in self.catalogues for spec in c]
        await register(nc.jetstream(), self.subjects, descriptions)
        for name, spec in self.tools.items():
            subject = self.subjects.tool(name)
            calls = await nc.subscribe(subject, queue="tool-hosts", cb=self._on_call)
            self._subscriptions.append(calls)
            if spec.confirm is not None:
                subject = self.subjects.tool_confirm(name)
                confirms = await nc.subscribe(subject, queue="tool-hosts", cb=self._on_confirm)
                self._subscriptions.append(confirms)
        await flushed(nc)  # subscribed before it says it serves

    async def stop(self) -> None:
        """Take no more calls, then finish the ones under way and record their results in
        the journal, so a host stopped between answering and recording leaves no unknown
        outcome behind. Calls not yet begun, or waiting on another host's claim, are
        answered at once as transient failures (:data:`~bus.runtime.journal.STOPPING`)."""
        for subscription in self._subscriptions:
            await subscription.unsubscribe()
        if self.journal is not None:
            self.journal.stopping = True
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.journal is not None:
            await self.journal.recorded()

    async def _on_confirm(self, msg: Msg) -> None:
        """Whether a recorded side effect exists as recorded (``verify --external``); read-only,
        so it needs no signature, and only the runtime can publish here."""
        task = asyncio.create_task(self._answer_confirm(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_confirm(self, msg: Msg) -> None:
        try:
            evidence = decode(msg.data, Evidence)
        except SchemaError as error:
            log.warning("a confirm request that does not decode: %s", error)
            return
        found = await check(self.tools.get(tool_of(evidence)), self.settings, evidence)
        if msg.reply:
            await msg.respond(encode(found))

    async def _on_call(self, msg: Msg) -> None:
        # One task per call: a slow SMTP server must not hold up every other call.
        task = asyncio.create_task(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Msg) -> None:
        tool = self.tools[msg.subject.rsplit(".", 1)[-1]]
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool.name}
        with telemetry.span(f"execute_tool {tool.name}", msg.headers, kind="SERVER", **attributes):
            try:
                await self._answer_call(msg, tool)
            except Exception:
                # The journal was unreachable (NATS away). No answer is the honest one: the
                # runtime's call times out and is asked again within its availability window.
                log.exception("%s: no answer given", tool.name)

    async def _answer_call(self, msg: Msg, tool: ToolSpec) -> None:
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

    async def call(self, tool: ToolSpec, call: ToolCall) -> bytes:
        """Run ``call`` once per idempotency key across every host; return the encoded result."""
        assert self.journal is not None, "serve() opens the journal"

        async def effect(reconciling: str) -> ToolResult:
            return await self._run(tool, call, reconciling)

        return encode(await self.journal.once(call.idempotency_key, effect))

    async def _run(self, tool: ToolSpec, call: ToolCall, reconciling: str) -> ToolResult:
        try:
            payload = tool.input.model_validate(call.payload)
        except ValidationError as error:
            return ToolResult(
                status="invalid_payload",
                error="payload does not match the tool's schema",
                fields=pydantic_field_errors(error),
            )
        context = Call(call.idempotency_key, call.workflow_id, call.actor, self.settings)
        try:
            output = await self._reconciled(tool, payload, context) if reconciling else None
            if output is None:
                output = await tool(payload, context)
        except ToolFailure as failure:
            log.warning("%s failed for %s: %s", tool.name, call.idempotency_key, failure)
            return ToolResult(status="failed", error=str(failure), transient=failure.transient)
        except Exception as error:  # a bug in the tool: said, not retried in a loop
            log.exception("%s raised for %s", tool.name, call.idempotency_key)
            problem = f"{tool.name} raised {type(error).__name__}: {error}"[:500]
            return ToolResult(status="failed", error=f"{problem} (outcome unknown)")
        dumped = output.model_dump(mode="json", by_alias=True)
        refs = {key: value for key, value in dumped.items() if isinstance(value, str)}
        log.info("%s executed for %s: %s", tool.name, call.idempotency_key, refs)
        return ToolResult(status="succeeded", output=dumped, refs=refs)

    async def _reconciled(self, tool: ToolSpec, payload: BaseModel, call: Call) -> BaseModel | None:
        """An earlier attempt's outcome is unknown: its output if the tool can tell it took
        effect; None to run it again, which only a tool whose retries the external system
        recognises (``idempotency="key"``) may do."""
        if tool.reconcile is not None:
            found = await tool.reconcile(payload, call)
            if found is not None:
                log.info("%s: %s had taken effect", tool.name, call.idempotency_key)
                return found
            return None
        if tool.idempotency == "none":
            raise ToolFailure(
                "an earlier attempt's outcome is unknown, and the tool can neither recognise "
                "a retry nor reconcile: not run again (a human should check)",
                transient=False,
            )
        return None
