"""NATS enforces the trust boundaries: a real nats-server with the generated configuration."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout

from bus.settings import Settings
from bus.transport.auth import Credentials, authorization_config, ensure_credentials
from bus.transport.connection import connect, ensure_inbox_consumer, ensure_streams
from bus.transport.server import EmbeddedNats
from bus.transport.subjects import Subjects

ROLES = ["runtime", "tools", "cli", "auditor", "agent-triage", "agent-notifier"]
SUBJECTS = Subjects("cc")


class Session:
    """A connection as one role that remembers the permission violations the server reports."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.nc: Client | None = None

    async def open(self, url: str, credentials: Path) -> Session:
        async def on_error(error: Exception) -> None:
            if "permissions violation" in str(error):
                self.violations.append(str(error))

        creds = Credentials.load(credentials)
        self.nc = await nats.connect(
            url,
            user=creds.user,
            password=creds.password,
            inbox_prefix=creds.inbox_prefix,
            error_cb=on_error,
        )
        return self

    async def publish(self, subject: str) -> None:
        assert self.nc is not None
        await self.nc.publish(subject, b"{}")
        await self.nc.flush()

    async def settle(self) -> list[str]:
        await asyncio.sleep(0.2)  # violations arrive asynchronously
        return self.violations


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedNats, dict[str, Path]]]:
    credentials = ensure_credentials(tmp_path / "credentials", ROLES)
    server = EmbeddedNats(tmp_path, authorization=authorization_config(credentials, SUBJECTS))
    await server.start()
    runtime = await connect(Settings(nats_url=server.url, credentials=credentials["runtime"]), "rt")
    await ensure_streams(runtime.jetstream(), SUBJECTS)
    await runtime.close()
    yield server, credentials
    await server.stop()


async def session(secured: tuple[EmbeddedNats, dict[str, Path]], role: str) -> Session:
    server, credentials = secured
    return await Session().open(server.url, credentials[role])


def test_credentials_and_configuration_are_private(
    secured: tuple[EmbeddedNats, dict[str, Path]],
) -> None:
    server, credentials = secured
    for path in [*credentials.values(), server.config_path]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert (
        Credentials.load(credentials["agent-triage"]).password not in credentials["cli"].read_text()
    )


async def test_an_unknown_user_cannot_connect(
    secured: tuple[EmbeddedNats, dict[str, Path]],
) -> None:
    server, _ = secured
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(
            server.url,
            user="agent-triage",
            password="guess",
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=2,
        )


@pytest.mark.parametrize(
    "subject",
    [
        "cc.tool.send_email",
        "cc.handoff.notifier",
        "cc.handoff.triage",
        "cc.events.wf.WorkflowCompleted",
        "cc.evidence.wf",
        "cc.escalation.wf",
        "cc.rt.notifier.execute",
        "cc.rt.cli.resolve",
        "$JS.API.STREAM.DELETE.CC_EVENTS",
    ],
)
async def test_an_agent_cannot_publish_outside_its_own_runtime_subjects(
    secured: tuple[EmbeddedNats, dict[str, Path]], subject: str
) -> None:
    agent = await session(secured, "agent-triage")
    await agent.publish(subject)
    assert len(await agent.settle()) == 1


async def test_an_agent_may_ask_the_runtime_under_its_own_name(
    secured: tuple[EmbeddedNats, dict[str, Path]],
) -> None:
    runtime = await session(secured, "runtime")
    assert runtime.nc is not None

    async def answer(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(msg.subject.encode())

    await runtime.nc.subscribe("cc.rt.>", cb=answer)
    await runtime.nc.flush()
    agent = await session(secured, "agent-triage")
    assert agent.nc is not None
    reply = await agent.nc.request("cc.rt.triage.state", b"{}", timeout=2)
    assert reply.data == b"cc.rt.triage.state"  # the subject, hence the identity, is the server's
    assert await agent.settle() == []


async def test_an_agent_cannot_read_another_agents_inbox(
    secured: tuple[EmbeddedNats, dict[str, Path]],
) -> None:
    agent = await session(secured, "agent-triage")
    assert agent.nc is not None
    js = agent.nc.jetstream(timeout=1)
    with pytest.raises(NatsTimeout):  # the consumer API call is refused, so nothing answers
        await js.pull_subscribe(
            SUBJECTS.inbox("notifier"), durable="agent-notifier", stream=SUBJECTS.stream("handoff")
        )
    with pytest.raises(NatsTimeout):  # nor may it bind its own durable to the other inbox
        await js.pull_subscribe(
            SUBJECTS.inbox("notifier"), durable="agent-triage", stream=SUBJECTS.stream("handoff")
        )
    await agent.nc.subscribe(SUBJECTS.inbox("notifier"))  # nor listen to the subject itself
    await agent.nc.flush()
    refused = len(await agent.settle())
    assert refused >= 3
    # its own inbox consumer, which the runtime makes, it may fetch from (empty here)
    server, credentials = secured
    runtime = await connect(Settings(nats_url=server.url, credentials=credentials["runtime"]), "rt")
    await ensure_inbox_consumer(runtime.jetstream(), SUBJECTS, "triage")
    await runtime.close()
    own = await js.pull_subscribe_bind("agent-triage", SUBJECTS.stream("handoff"))
    with pytest.raises(NatsTimeout):
        await own.fetch(1, timeout=0.5)
    assert len(await agent.settle()) == refused


@pytest.mark.parametrize(
    "subject", ["cc.rt.auditor.state", "cc.evidence.wf", "cc.audit.x", "$JS.API.INFO"]
)
async def test_the_auditor_cannot_publish_anything(
    secured: tuple[EmbeddedNats, dict[str, Path]], subject: str
) -> None:
    auditor = await session(secured, "auditor")
    await auditor.publish(subject)
    assert len(await auditor.settle()) == 1


async def test_the_tool_host_only_answers(secured: tuple[EmbeddedNats, dict[str, Path]]) -> None:
    tools = await session(secured, "tools")
    for subject in ("cc.events.wf.X", "cc.handoff.triage", "cc.rt.triage.execute"):
        await tools.publish(subject)
    assert len(await tools.settle()) == 3


async def test_a_request_cannot_name_its_own_actor() -> None:
    """The identity is the subject token; a payload field claiming one is an unknown field."""
    from handoff_schemas import CheckpointRequest, SchemaError, decode

    with pytest.raises(SchemaError, match="actor"):
        decode(
            b'{"workflowId": "w", "stepKey": "k", "name": "n", "actor": "runtime"}',
            CheckpointRequest,
        )
