"""A secured stack for the compromised-agent tests: a real nats-server with the generated
per-role users, the runtime, its relay and a tool host each connected with their own
credentials, and helpers that connect as any role, the way a foreign client holding
stolen credentials would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import DeliverPolicy

from bus.ledger import Ledger
from bus.ledger.relay import Relay
from bus.operations.mailbox import Mailbox
from bus.operations.operators import submit
from bus.runtime.policy import Policy
from bus.runtime.service import Runtime
from bus.runtime.tool_host import ToolHost
from bus.settings import Settings
from bus.tools import complaints
from bus.transport.auth import Credentials, authorization_config, ensure_credentials
from bus.transport.connection import connect, ensure_streams
from bus.transport.server import EmbeddedNats
from bus.transport.subjects import Subjects
from handoff_schemas import Reply, decode

ROLES = ["runtime", "tools", "cli", "auditor", "agent-triage", "agent-notifier", "agent-mallory"]
COMPLAINT = json.dumps({"customer": "northwind", "text": "refund now"}).encode()


@dataclass
class SecureBus:
    server: EmbeddedNats
    credentials: dict[str, Path]
    settings: Settings
    ledger: Ledger
    runtime: Runtime
    nc: Client  # the runtime's own connection
    subjects: Subjects
    clients: list[Client]

    async def connect(self, role: str) -> Client:
        """A plain NATS client holding ``role``'s real credentials."""
        creds = Credentials.load(self.credentials[role])

        async def quiet(error: Exception) -> None:  # permission violations are expected
            pass

        client = await nats.connect(
            self.server.url,
            user=creds.user,
            password=creds.password,
            inbox_prefix=creds.inbox_prefix,
            error_cb=quiet,
        )
        self.clients.append(client)
        return client

    async def ask(self, client: Client, agent: str, op: str, body: dict[str, Any] | bytes) -> Reply:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        msg = await client.request(self.subjects.runtime(agent, op), data, timeout=10)
        return decode(msg.data, Reply)

    async def start(self, to: str = "mallory", budget_usd: float | None = None) -> str:
        """A workflow started by the operator, handed to ``to``."""
        operator = await self.connect("cli")
        reply = await submit(
            operator, self.subjects, "triage_complaint", to, COMPLAINT, budget_usd=budget_usd
        )
        return reply.workflow_id

    def types(self, workflow_id: str) -> list[str]:
        return [event.type for event in self.ledger.history(workflow_id)]

    async def stream_count(self, kind: str) -> int:
        info = await self.nc.jetstream().stream_info(self.subjects.stream(kind))
        return info.state.messages

    async def security_entries(self, agent: str, expected: int = 1) -> list[dict[str, Any]]:
        """The security stream's entries about ``agent``, waiting for ``expected`` of them."""
        js = self.nc.jetstream()
        for _ in range(50):
            if await self.stream_count("security") >= expected:
                break
            await asyncio.sleep(0.05)
        subscription = await js.subscribe(
            self.subjects.security(agent), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        entries = []
        try:
            while True:
                try:
                    msg = await subscription.next_msg(timeout=0.5)
                except TimeoutError:
                    return entries
                entries.append(json.loads(msg.data))
        finally:
            await subscription.unsubscribe()


@pytest.fixture
async def secure_bus(tmp_path: Path, policy: Policy, mailbox: Mailbox) -> AsyncIterator[SecureBus]:
    """The stack on a SQLite ledger: what these tests check is the runtime's, the same on
    either backend (the rest of the suite runs the ledger on both)."""
    subjects = Subjects("cc")
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger.from_url(ledger_url)
    credentials = ensure_credentials(tmp_path / "credentials", ROLES)
    server = EmbeddedNats(
        tmp_path / "nats", authorization=authorization_config(credentials, subjects)
    )
    await server.start()
    settings = Settings(
        state_dir=tmp_path / "state",
        nats_url=server.url,
        ledger=ledger_url,
        smtp_port=mailbox.port,
        tool_timeout=5.0,
        request_timeout=10.0,
        credentials=credentials["runtime"],
    )
    nc = await connect(settings, "runtime")
    await ensure_streams(nc.jetstream(), subjects)
    relay = Relay(ledger, nc, subjects, poll_interval=0.2)
    runtime = Runtime(settings, ledger, policy, nc, on_commit=relay.wake)
    await runtime.serve()
    tool_settings = settings.model_copy(update={"credentials": credentials["tools"]})
    tools_nc = await connect(tool_settings, "tools")
    await ToolHost(tool_settings, [complaints]).serve(tools_nc)
    relay_task = asyncio.create_task(relay.run())
    bus = SecureBus(server, credentials, settings, ledger, runtime, nc, subjects, [tools_nc])
    yield bus
    relay_task.cancel()
    await relay.close()
    for client in bus.clients:
        await client.close()
    await nc.drain()
    runtime.close()
    ledger.close()
    await server.stop()
