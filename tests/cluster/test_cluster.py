"""The scaled-out deployment as separate OS processes, no container engine needed.

Three nats-server processes form a JetStream cluster (streams with 3 replicas) with a
user per role; PostgreSQL holds the ledger; two runtimes, two tool hosts and two replicas
of the agent run, each with its role's credentials. Mid-run the stream leader and one
runtime are SIGKILLed. Every workflow completes exactly once (one completion, one email),
and the server refuses an anonymous client and a client acting outside its role.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import nats
import pytest

from bus.ledger import Ledger
from bus.operations.mailbox import Mailbox
from bus.operations.operators import submit, watch
from bus.operations.stack import Stack
from bus.settings import Settings
from bus.transport.auth import Credentials, agent_role, authorization_config, ensure_credentials
from bus.transport.connection import connect
from bus.transport.subjects import OPERATOR, Subjects
from tests.conftest import POSTGRES_URL, postgres_connection, start_nats_cluster

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

POLICY = """
[[rules]]
name = "mailer-emails-ops"
actor = "mailer"
action = "send_email"
resource = "mailto:*@acme.example"
effect = "allow"
"""

WORKFLOWS = 12


@pytest.fixture
def postgres_ledger() -> Iterator[str]:
    schema = f"cc_cluster_{uuid4().hex[:12]}"
    with postgres_connection() as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        try:
            yield f"{POSTGRES_URL}?schema={schema}"
        finally:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


async def test_a_cluster_rides_out_losing_the_stream_leader_and_a_runtime(
    tmp_path: Path, postgres_ledger: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAIMCHECK_TEST_GATES", str(tmp_path / "gates"))
    monkeypatch.setenv("CLAIMCHECK_TEST_MODEL_LOG", str(tmp_path / "model.log"))
    (tmp_path / "gates").mkdir()
    state = tmp_path / "state"
    subjects = Subjects("cc")
    roles = ["runtime", "tools", OPERATOR, "auditor", agent_role("mailer")]
    credentials = ensure_credentials(state / "credentials", roles)
    runtime_user = Credentials.load(credentials["runtime"])
    nodes = await start_nats_cluster(
        tmp_path,
        authorization_config(credentials, subjects),
        user=runtime_user.user,
        password=runtime_user.password,
    )
    mailbox = Mailbox()
    mailbox.start()
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    settings = Settings(
        state_dir=state,
        nats_url=",".join(node.url for node in nodes),
        ledger=postgres_ledger,
        stream_replicas=3,
        smtp_port=mailbox.port,
        policy=policy,
        tool_timeout=2.0,
        tool_lease=1.0,
        request_timeout=10.0,
        credentials=credentials[OPERATOR],
    )
    stack = Stack(
        settings,
        agents=("tests.failures.fault_agents:mailer",),
        embedded_nats=False,
        runtimes=2,
        tool_hosts=2,
        agent_replicas=2,
    )
    stack.credentials = credentials
    try:
        async with stack:
            # The scenario is "one of two serving runtimes dies": wait until both serve.
            logs = [state / "logs" / f"{name}.log" for name in ("runtime", "runtime-2")]
            async with asyncio.timeout(60):
                while not all(  # noqa: ASYNC110 (polls the processes' logs)
                    log.exists() and "runtime serving" in log.read_text() for log in logs
                ):
                    await asyncio.sleep(0.2)
            nc = await connect(settings, "test-operator")
            try:
                ids = [
                    (await submit(nc, subjects, "mail", "mailer", b'{"n": %d}' % n)).workflow_id
                    for n in range(WORKFLOWS // 2)
                ]
                # Kill the leader of the agents' inbox stream, and one runtime, mid-run.
                admin = settings.model_copy(update={"credentials": credentials["runtime"]})
                runtime_nc = await connect(admin, "test-admin")  # the operator may not look
                info = await runtime_nc.jetstream().stream_info(subjects.stream("handoff"))
                await runtime_nc.close()
                leader = next(node for node in nodes if node.name == info.cluster.leader)
                await leader.kill()
                await stack.kill("runtime")
                ids += [
                    (await submit(nc, subjects, "mail", "mailer", b'{"n": %d}' % n)).workflow_id
                    for n in range(WORKFLOWS // 2, WORKFLOWS)
                ]
                views = await asyncio.gather(*(watch(nc, subjects, wf, timeout=120) for wf in ids))
            finally:
                await nc.close()
            assert [view.status for view in views] == ["completed"] * WORKFLOWS
            assert len(set(ids)) == WORKFLOWS
            assert len(mailbox.received) == WORKFLOWS  # one email per workflow, none twice

            ledger = Ledger.from_url(postgres_ledger)
            try:
                for workflow_id in ids:
                    kinds = Counter(event.type for event in ledger.history(workflow_id))
                    assert kinds["WorkflowCompleted"] == 1, (workflow_id, kinds)
            finally:
                ledger.close()

            # The server refuses a stranger, and an agent acting as a tool host.
            alive = next(node for node in nodes if node is not leader)
            with pytest.raises(Exception, match=r"(?i)authorization"):
                await nats.connect(alive.url, allow_reconnect=False, max_reconnect_attempts=0)
            violations: list[str] = []

            async def on_error(error: Exception) -> None:
                violations.append(str(error))

            agent = Credentials.load(credentials[agent_role("mailer")])
            rogue = await nats.connect(
                alive.url, user=agent.user, password=agent.password, error_cb=on_error
            )
            await rogue.publish(subjects.tool("send_email"), b"{}")
            await rogue.flush()
            await asyncio.sleep(0.5)
            await rogue.close()
            assert any("permissions violation" in v.lower() for v in violations), violations
            assert len(mailbox.received) == WORKFLOWS
    finally:
        mailbox.stop()
        await asyncio.gather(*(node.stop() for node in nodes))
