"""NATS enforces the trust boundaries: a real nats-server with the generated configuration.

Every test runs twice: with the deployment identities of ``claimcheck auth init`` (operator
mode, user JWTs in ``.creds`` files) and with the embedded stack's bcrypt-hashed passwords.
"""

from __future__ import annotations

import asyncio
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout

from bus.settings import Settings
from bus.transport.auth import Credentials, authorization_config, ensure_credentials
from bus.transport.connection import connect, ensure_inbox_consumer, ensure_streams, flushed
from bus.transport.identities import AUTH_CONFIG, Identities
from bus.transport.server import EmbeddedNats, nats_server_binary
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

        options = Credentials.load(credentials).connect_options()
        self.nc = await nats.connect(url, error_cb=on_error, **options)
        return self

    async def publish(self, subject: str) -> None:
        assert self.nc is not None
        await self.nc.publish(subject, b"{}")
        await self.nc.flush()

    async def settle(self) -> list[str]:
        await asyncio.sleep(0.2)  # violations arrive asynchronously
        return self.violations


def server_with(tmp_path: Path, kind: str) -> tuple[EmbeddedNats, dict[str, Path]]:
    """A server configured for ``kind`` of credentials, and the credentials of every role."""
    if kind == "jwt":
        identities = Identities(tmp_path / "auth", SUBJECTS)
        credentials = identities.issue(ROLES)
        authorization = (tmp_path / "auth" / AUTH_CONFIG).read_text()
    else:
        credentials = ensure_credentials(tmp_path / "credentials", ROLES)
        authorization = authorization_config(credentials, SUBJECTS)
    return EmbeddedNats(tmp_path / "nats", authorization=authorization), credentials


@pytest.fixture(params=["jwt", "password"])
async def secured(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[EmbeddedNats, dict[str, Path]]]:
    server, credentials = server_with(tmp_path, request.param)
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
    triage = credentials["agent-triage"].read_text()
    assert triage not in credentials["cli"].read_text()
    configuration = server.config_path.read_text()
    for role, path in credentials.items():
        creds = Credentials.load(path)
        assert creds.user == role
        secret = creds.password or seed_of(path)
        assert secret not in configuration  # a hash or a public JWT only


def seed_of(path: Path) -> str:
    lines = path.read_text().splitlines()
    return lines[lines.index("-----BEGIN USER NKEY SEED-----") + 1]


async def refused(url: str, **options: object) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(
            url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2, **options
        )


async def test_an_unknown_user_cannot_connect(
    secured: tuple[EmbeddedNats, dict[str, Path]],
) -> None:
    server, _ = secured
    await refused(server.url, user="agent-triage", password="guess")
    await refused(server.url)  # anonymous


async def test_a_user_of_another_account_cannot_connect(tmp_path: Path) -> None:
    """Only users the deployment's own account signed get in: not another deployment's."""
    server, _ = server_with(tmp_path, "jwt")
    stranger = Identities(tmp_path / "other", SUBJECTS).issue(["runtime"])["runtime"]
    await server.start()
    try:
        await refused(server.url, user_credentials=str(stranger))
    finally:
        await server.stop()


async def test_an_agent_added_later_connects_without_a_server_change(tmp_path: Path) -> None:
    server, _ = server_with(tmp_path, "jwt")
    await server.start()
    try:
        added = Identities(tmp_path / "auth", SUBJECTS).add_user("agent-billing")
        agent = await Session().open(server.url, added)
        await agent.publish("cc.rt.billing.state")  # its own subjects
        await agent.publish("cc.rt.triage.state")  # another agent's name
        await agent.publish("cc.tool.send_email")
        assert len(await agent.settle()) == 2
    finally:
        await server.stop()


def test_the_generated_server_configuration_passes_the_servers_own_check(
    tmp_path: Path,
) -> None:
    for kind in ("jwt", "password"):
        server, _ = server_with(tmp_path / kind, kind)
        server.write_config()
        checked = subprocess.run(
            [nats_server_binary(), "-t", "-c", str(server.config_path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert checked.returncode == 0, checked.stderr


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
    await flushed(runtime.nc)
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
    await flushed(agent.nc)
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
