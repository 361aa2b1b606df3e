"""Crash tests: SIGKILL an agent, the runtime, the tool host or nats-server mid-workflow, restart
it, and check that the workflow finishes with every side effect exactly once. Each runs on SQLite
and on PostgreSQL, with every part a separate OS process."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bus.ledger import Ledger
from bus.operations.mailbox import Mailbox
from bus.operations.operators import escalations, resolve, submit, watch
from bus.operations.stack import Stack
from bus.settings import Settings
from bus.transport.connection import connect
from bus.transport.subjects import Subjects
from projections import WorkflowView

POLICY = """
[[rules]]
name = "mailer-emails-ops"
actor = "mailer"
action = "send_email"
resource = "mailto:*@acme.example"
effect = "allow"

[[rules]]
name = "ghost-emails-ops"
actor = "ghost"
action = "send_email"
resource = "mailto:*@acme.example"
effect = "allow"
"""


@dataclass
class Faults:
    stack: Stack
    mailbox: Mailbox
    gates: Path
    model_log: Path

    @property
    def settings(self) -> Settings:
        return self.stack.settings

    def hold(self, point: str) -> None:
        (self.gates / f"{point}.hold").touch()

    def release(self, point: str) -> None:
        (self.gates / f"{point}.hold").unlink()

    async def reached(self, point: str, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not (self.gates / f"{point}.reached").exists():  # noqa: ASYNC110
                await asyncio.sleep(0.05)

    def model_calls(self) -> int:
        return len(self.model_log.read_text().splitlines()) if self.model_log.exists() else 0

    async def submit(self, to: str = "mailer", task: str = "mail") -> str:
        nc = await connect(self.settings, "test-submit")
        try:
            return (
                await submit(nc, Subjects(self.settings.prefix), task, to, b'{"n": 1}')
            ).workflow_id
        finally:
            await nc.close()

    async def outcome(self, workflow_id: str, timeout: float = 60) -> WorkflowView:
        nc = await connect(self.settings, "test-watch")
        try:
            return await watch(nc, Subjects(self.settings.prefix), workflow_id, timeout=timeout)
        finally:
            await nc.close()

    async def streamed_positions(self) -> list[int]:
        nc = await connect(self.settings, "test-events")
        js = nc.jetstream()
        info = await js.stream_info(Subjects(self.settings.prefix).stream("events"))
        subscription = await js.subscribe(f"{self.settings.prefix}.events.>", ordered_consumer=True)
        positions = [
            json.loads((await subscription.next_msg(timeout=5)).data)["position"]
            for _ in range(info.state.messages)
        ]
        await nc.close()
        return positions


@asynccontextmanager
async def faults_stack(
    tmp_path: Path, ledger_url: str, monkeypatch: pytest.MonkeyPatch, **stack_options: object
) -> AsyncIterator[Faults]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    gates, model_log = tmp_path / "gates", tmp_path / "model.log"
    gates.mkdir()
    monkeypatch.setenv("CLAIMCHECK_TEST_GATES", str(gates))
    monkeypatch.setenv("CLAIMCHECK_TEST_MODEL_LOG", str(model_log))
    inbox_ack_wait = float(os.environ.get("CLAIMCHECK_INBOX_ACK_WAIT", "2"))  # fast crash tests
    mailbox = Mailbox()
    mailbox.start()
    settings = Settings(
        state_dir=tmp_path / "state",
        ledger=ledger_url,
        smtp_port=mailbox.port,
        policy=policy,
        tool_timeout=2.0,
        tool_lease=1.0,  # a killed tool host's claim lapses before the runtime's retry
        request_timeout=10.0,
        inbox_ack_wait=inbox_ack_wait,
    )
    options = {"agents": ("tests.failures.fault_agents:mailer",), **stack_options}
    try:
        async with Stack(settings, **options) as stack:  # type: ignore[arg-type]
            yield Faults(stack, mailbox, gates, model_log)
    finally:
        mailbox.stop()


@pytest.fixture
async def faults(
    tmp_path: Path, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Faults]:
    async with faults_stack(tmp_path, ledger_url, monkeypatch) as running:
        yield running


def assert_exactly_once(ledger_url: str, workflow_id: str, streamed: list[int]) -> None:
    """No step ran twice, no event is missing or duplicated in the ledger or on the stream."""
    ledger = Ledger.from_url(ledger_url)
    try:
        history = ledger.history(workflow_id)
        notifications = ledger.notifications(0, limit=100_000)
    finally:
        ledger.close()
    assert [event.version for event in history] == list(range(1, len(history) + 1))
    executed = Counter(e.data["step_key"] for e in history if e.type == "ToolExecuted")
    assert executed and max(executed.values()) == 1
    assert streamed == [n.id for n in notifications]


async def test_an_agent_killed_after_the_email_is_replaced_without_a_second_email(
    faults: Faults, ledger_url: str
) -> None:
    faults.hold("after-email")
    workflow_id = await faults.submit()
    await faults.reached("after-email")
    assert len(faults.mailbox.received) == 1 and faults.model_calls() == 1
    await faults.stack.kill("agent-mailer")  # before its checkpoint and its ack
    faults.release("after-email")
    await faults.stack.start_process("agent-mailer")
    view = await faults.outcome(workflow_id)
    assert view.status == "completed"
    assert len(faults.mailbox.received) == 1
    assert faults.model_calls() == 1  # the new process got the recorded reasoning back
    assert view.checkpoints == {
        "email-sent": {"messageId": faults.mailbox.received[0]["Message-ID"]}
    }
    assert_exactly_once(ledger_url, workflow_id, await faults.streamed_positions())


async def test_a_runtime_killed_mid_workflow_restarts_and_the_workflow_completes(
    faults: Faults, ledger_url: str
) -> None:
    faults.hold("after-reasoning")
    workflow_id = await faults.submit()
    await faults.reached("after-reasoning")
    await faults.stack.kill("runtime")
    faults.release("after-reasoning")  # the agent now asks a runtime that is not there
    await asyncio.sleep(1.0)
    await faults.stack.start_process("runtime")
    view = await faults.outcome(workflow_id)
    assert view.status == "completed"
    assert len(faults.mailbox.received) == 1 and faults.model_calls() == 1
    assert_exactly_once(ledger_url, workflow_id, await faults.streamed_positions())


async def test_a_nats_server_restart_mid_workflow_is_ridden_out(
    faults: Faults, ledger_url: str
) -> None:
    faults.hold("after-reasoning")
    workflow_id = await faults.submit()
    await faults.reached("after-reasoning")
    assert faults.stack.nats is not None
    await faults.stack.nats.kill()
    faults.release("after-reasoning")
    await asyncio.sleep(1.0)
    await faults.stack.nats.start()  # same port, same JetStream files (fsync always)
    view = await faults.outcome(workflow_id)
    assert view.status == "completed"
    assert len(faults.mailbox.received) == 1
    assert_exactly_once(ledger_url, workflow_id, await faults.streamed_positions())


async def test_a_tool_host_killed_mid_call_is_retried_with_the_same_key(
    faults: Faults, ledger_url: str
) -> None:
    faults.mailbox.rcpt_delays.append(5.0)  # the first SMTP exchange stalls at RCPT
    workflow_id = await faults.submit()
    await asyncio.to_thread(faults.mailbox.rcpt_seen.wait, 30)
    await faults.stack.restart("tools")  # SIGKILL mid-exchange, then a fresh tool host
    view = await faults.outcome(workflow_id)
    assert view.status == "completed"
    assert len(faults.mailbox.received) == 1
    assert view.failures == []  # a host restarted within the availability window is waited out
    [unavailable] = view.tool_unavailable
    assert unavailable["kind"] == "timeout"
    assert view.tool_executions[0]["attempt"] == 2
    assert_exactly_once(ledger_url, workflow_id, await faults.streamed_positions())


async def test_two_runtime_replicas_never_run_a_step_twice(
    tmp_path: Path, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent requests for one workflow, spread over two runtimes on one ledger."""
    async with faults_stack(
        tmp_path, ledger_url, monkeypatch, agents=(), runtimes=2, extra_roles=("agent-ghost",)
    ) as faults:
        workflow_id = await faults.submit(to="ghost", task="anything")
        ghost = faults.settings.model_copy(
            update={"credentials": faults.stack.credentials["agent-ghost"]}
        )
        nc = await connect(ghost, "test-ghost")
        subject = Subjects(ghost.prefix).runtime("ghost", "{}")

        async def ask(op: str, body: dict) -> dict:
            msg = await nc.request(subject.format(op), json.dumps(body).encode(), timeout=20)
            return json.loads(msg.data)

        email = {
            "workflowId": workflow_id,
            "stepKey": "g/1",
            "tool": "send_email",
            "payload": {"to": "ops@acme.example", "subject": "s", "body": "b"},
        }
        replies = await asyncio.gather(*(ask("execute", email) for _ in range(8)))
        checkpoints = await asyncio.gather(
            *(
                ask(
                    "checkpoint", {"workflowId": workflow_id, "stepKey": f"g/c{i}", "name": f"c{i}"}
                )
                for i in range(8)
            )
        )
        await nc.close()
        await asyncio.sleep(1.0)  # let both relays publish
        streamed = await faults.streamed_positions()

        assert all(reply["ok"] for reply in replies + checkpoints), replies + checkpoints
        assert len({json.dumps(reply, sort_keys=True) for reply in replies}) == 1
        assert len(faults.mailbox.received) == 1
        ledger = Ledger.from_url(ledger_url)
        try:
            history = ledger.history(workflow_id)
        finally:
            ledger.close()
        types = Counter(event.type for event in history)
        assert (types["ActionRequested"], types["ToolExecuted"], types["CheckpointReached"]) == (
            1,
            1,
            8,
        )
        assert_exactly_once(ledger_url, workflow_id, streamed)


async def test_an_escalation_survives_restarting_the_runtime_and_nats(
    faults: Faults, ledger_url: str
) -> None:
    workflow_id = await faults.submit(task="mail_press")
    assert (await faults.outcome(workflow_id)).status == "escalated"
    assert faults.stack.nats is not None
    await faults.stack.kill("runtime")
    await faults.stack.nats.kill()
    await faults.stack.nats.start()
    await faults.stack.start_process("runtime")
    await faults.stack.wait_until_serving()
    nc = await connect(faults.settings, "test-approver")
    subjects = Subjects(faults.settings.prefix)
    try:
        [waiting] = (await escalations(nc, subjects)).open
        assert waiting["workflowId"] == workflow_id
        await resolve(nc, subjects, waiting["escalationId"], "approve", "dana")
        done = await watch(nc, subjects, workflow_id, until=lambda view: view.status == "completed")
    finally:
        await nc.close()
    assert done.status == "completed"
    assert [m["To"] for m in faults.mailbox.received] == ["press@pr-agency.example"]
