"""Operator controls and faults, with every part a real process: the stack's nats-server,
runtime, tool host and agent, and the command line as its own process each time.

Faults an agent reports are in the ledger (status, show, trace); cancel, terminate, retry,
reset, signal and an approval with corrections are each recorded with who and why, and
each refuses what does not apply with a clear message.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents.client import RuntimeClient, RuntimeRefused
from bus.ledger import Ledger
from bus.operations.mailbox import Mailbox
from bus.operations.operators import submit, watch
from bus.operations.stack import Stack
from bus.settings import Settings
from bus.transport.connection import connect
from bus.transport.subjects import Subjects
from handoff_schemas import ControlReply, EventEnvelope, StopRequest
from projections import WorkflowView
from tests.conftest import claimcheck
from tests.failures.test_faults import Faults

POLICY = """
[[rules]]
name = "worker-files-tickets"
actor = "worker"
action = "create_ticket"
resource = "ticket:*"
effect = "allow"

[[rules]]
name = "worker-emails-acme"
actor = "worker"
action = "send_email"
resource = "mailto:*@acme.example"
effect = "allow"
"""


@dataclass
class Running:
    settings: Settings
    mailbox: Mailbox
    gates: Path
    points: Faults
    """Holds the agent at named points (``hold``, ``release``, ``reached``)."""

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir

    async def submit(self, task: str, data: bytes = b'{"customer": "c", "item": "desk"}') -> str:
        nc = await connect(self.settings, "test-submit")
        try:
            reply = await submit(nc, Subjects(self.settings.prefix), task, "worker", data)
            return reply.workflow_id
        finally:
            await nc.close()

    async def until(
        self, workflow_id: str, holds: Callable[[WorkflowView], bool], timeout: float = 45
    ) -> WorkflowView:
        nc = await connect(self.settings, "test-watch")
        try:
            view = await watch(
                nc, Subjects(self.settings.prefix), workflow_id, timeout=timeout, until=holds
            )
        finally:
            await nc.close()
        assert holds(view), (view.status, view.outcome, view.last_event)
        return view

    async def cli(self, *args: str, ok: bool = True) -> str:
        """Run ``claimcheck`` as its own process; return what it said (stdout and stderr)."""
        result = await asyncio.to_thread(claimcheck, *args, state_dir=self.state_dir)
        said = result.stdout + result.stderr
        assert (result.returncode == 0) == ok, (args, said)
        assert not re.search(r"^Traceback", said, re.MULTILINE)  # a recorded one is indented
        return said

    def history(self, workflow_id: str) -> list[EventEnvelope]:
        ledger = Ledger.from_url(self.settings.ledger_url())
        try:
            return ledger.history(workflow_id)
        finally:
            ledger.close()


def status_is(*statuses: str) -> Callable[[WorkflowView], bool]:
    return lambda view: view.status in statuses


def of_type(history: list[EventEnvelope], kind: str) -> list[dict]:
    return [event.data for event in history if event.type == kind]


@pytest.fixture
async def running(
    tmp_path: Path, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Running]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    gates = tmp_path / "gates"
    gates.mkdir()
    monkeypatch.setenv("CLAIMCHECK_TEST_GATES", str(gates))
    monkeypatch.setenv("CLAIMCHECK_POLICY", str(policy))
    settings = Settings(
        state_dir=tmp_path / "state",
        smtp_port=mailbox.port,
        policy=policy,
        inbox_ack_wait=2.0,
        inbox_max_deliver=2,  # a handler that keeps failing is dead-lettered in seconds
    )
    agents = ("tests.operations.operator_agents:worker",)
    async with Stack(settings, agents=agents) as stack:
        yield Running(settings, mailbox, gates, Faults(stack, mailbox, gates, tmp_path / "m.log"))


async def test_faults_are_in_the_ledger_and_a_failed_workflow_is_retried(
    running: Running,
) -> None:
    not_json = await running.submit("order", b"{not json")
    not_an_order = await running.submit("order", b'{"customer": "c"}')
    (running.gates / "crash").touch()
    crashing = await running.submit("crash")

    view = await running.until(not_json, status_is("failed"))
    assert "undecodable input (JSONDecodeError: Expecting property name" in view.outcome
    assert len(view.faults) == 1  # failed at once: the same bytes would fail again
    view = await running.until(not_an_order, status_is("failed"))
    assert "invalid payload (ValidationError: 1 validation error for Order" in view.outcome
    view = await running.until(crashing, status_is("failed"))
    assert "failed 2 deliveries; the last: handler exception: RuntimeError: the handler broke" in (
        view.outcome
    )
    assert [fault["delivery"] for fault in view.faults] == [1, 2]

    status = await running.cli("status", crashing)
    assert "why: handoff" in status and "RuntimeError: the handler broke" in status
    shown = await running.cli("show", crashing)
    assert "fault: worker on handoff" in shown
    assert "| Traceback (most recent call last):" in shown and "| RuntimeError" in shown
    traced = await running.cli("trace", not_json)
    assert "worker failed handling" in traced and "undecodable input: JSONDecodeError" in traced

    # retry: the cause is fixed, the failed handling runs again and completes
    (running.gates / "crash").unlink()
    retried = await running.cli(
        "workflows", "retry", crashing, "--reason", "fixed the flag", "--as", "dana"
    )
    assert f"retried workflow {crashing}: now running" in retried
    await running.until(crashing, status_is("completed"))
    [record] = of_type(running.history(crashing), "WorkflowRetried")
    assert (record["by"], record["role"], record["reason"]) == ("dana", "cli", "fixed the flag")
    assert [m["Subject"] for m in running.mailbox.received] == ["fine"]

    for args, said in (
        (("retry", crashing, "--reason", "again"), "only a failed workflow is retried"),
        (("retry", "00000000-0000-0000-0000-000000000000", "--reason", "x"), "no workflow"),
        (("retry", not_json, "--reason", "x", "--handoff", "ho-nope"), "has no handoff"),
    ):
        assert said in await running.cli("workflows", *args, ok=False)


async def test_cancel_terminate_and_signal(running: Running) -> None:
    running.points.hold("after-ticket")
    busy = await running.submit("order")
    await running.points.reached("after-ticket")
    cancelled = await running.cli(
        "workflows", "cancel", busy, "--reason", "customer withdrew", "--as", "dana"
    )
    assert f"cancelled workflow {busy}: now cancelled" in cancelled
    # an agent cannot control a workflow: the runtime reads who asks from the connection
    worker = running.settings.model_copy(
        update={"credentials": running.points.stack.credentials["agent-worker"]}
    )
    nc = await connect(worker, "test-worker")
    try:
        client = RuntimeClient(nc, Subjects(worker.prefix), "worker", 10.0)
        stop = StopRequest(workflow_id=busy, by="worker", reason="I decide")
        with pytest.raises(RuntimeRefused, match="only the operator may terminate"):
            await client.call("terminate", stop, ControlReply)
    finally:
        await nc.close()
    assert not of_type(running.history(busy), "WorkflowTerminated")
    running.points.release("after-ticket")  # the agent's next request (the email) is refused
    await asyncio.sleep(3)
    history = running.history(busy)
    [record] = of_type(history, "WorkflowCancelled")
    assert (record["by"], record["role"], record["reason"]) == ("dana", "cli", "customer withdrew")
    assert [e["tool"] for e in of_type(history, "ToolExecuted")] == ["create_ticket"]
    assert history[-1].type == "WorkflowCancelled"  # nothing after: the agent stopped
    assert running.mailbox.received == []

    waiting = await running.submit("ask")
    await running.until(waiting, status_is("waiting"))
    listed = json.loads(await running.cli("status", "--status", "waiting", "--json"))
    assert [row["workflowId"] for row in listed] == [waiting]
    assert "an operator's signal" in listed[0]["waiting"]
    signalled = await running.cli(
        "workflows", "signal", waiting, "recipient", "--data", '{"to": "legal@acme.example"}',
        "--reason", "legal asked", "--as", "dana",
    )  # fmt: skip
    assert "delivered to the waiting handoff" in signalled
    await running.until(waiting, status_is("completed"))
    assert [m["To"] for m in running.mailbox.received] == ["legal@acme.example"]

    ended = await running.submit("ask")
    await running.until(ended, status_is("waiting"))
    await running.cli("workflows", "terminate", ended, "--reason", "no answer coming")
    assert running.history(ended)[-1].type == "WorkflowTerminated"

    unknown = "00000000-0000-0000-0000-000000000000"
    for args, said in (
        (("cancel", busy, "--reason", "again"), "already cancelled: nothing to cancel"),
        (("cancel", waiting, "--reason", "late"), "already completed: nothing to cancel"),
        (("terminate", ended, "--reason", "again"), "already terminated"),
        (("cancel", unknown, "--reason", "x"), "no workflow"),
        (("cancel", "not-an-id", "--reason", "x"), "no workflow"),
        (("cancel", busy, "--reason", ""), "reason"),
        (("signal", waiting, "recipient", "--reason", "x"), "takes no more signals"),
        (("signal", ended, "recipient", "--reason", "x", "--data", "nope"), "--data is not JSON"),
        (("signal", ended, "recipient", "--reason", "x", "--data", "[1]"), "a JSON object"),
    ):
        assert said in await running.cli("workflows", *args, ok=False), args


async def test_reset_branches_and_an_approval_with_corrections(running: Running) -> None:
    first = await running.submit("order")
    await running.until(first, status_is("completed"))
    branch = (
        await running.cli(
            "workflows", "reset", first, "--to-checkpoint", "filed", "--reason", "resend",
            "--as", "dana",
        )
    ).strip().splitlines()[-1]  # fmt: skip
    view = await running.until(branch, status_is("completed"))
    assert view.reset_from is not None and view.reset_from["workflowId"] == first
    old = running.history(first)
    assert old[-1].type == "WorkflowReset" and old[-1].data["branch"] == branch
    with sqlite3.connect(running.settings.tickets_path()) as db:
        assert db.execute("SELECT COUNT(*) FROM tickets").fetchone() == (1,)  # not filed again
    assert len(running.mailbox.received) == 2  # the email, after the checkpoint, ran again
    assert f"continues as workflow {branch}" in await running.cli("show", first)
    for args, said in (
        (("reset", first, "--to-event", "2", "--reason", "x"), "already reset"),
        (("reset", branch, "--to-event", "999", "--reason", "x"), "outside this workflow"),
        (("reset", branch, "--to-checkpoint", "nope", "--reason", "x"), "never reached"),
        (("reset", branch, "--reason", "x"), "give one of --to-event"),
    ):
        assert said in await running.cli("workflows", *args, ok=False), args

    held = await running.submit("press")
    view = await running.until(held, status_is("escalated"))
    escalation = view.escalations[0]["escalationId"]
    denied = await running.cli(
        "escalations", "approve", escalation, "--as", "dana",
        "--with", "to=other@pr-agency.example", ok=False,
    )  # fmt: skip
    assert "the corrected action (send_email on mailto:other@pr-agency.example) is denied" in denied
    assert "stays open" in denied
    assert escalation in await running.cli("escalations", "list")
    assert "FIELD=VALUE" in await running.cli(
        "escalations", "approve", escalation, "--as", "dana", "--with", "to", ok=False
    )
    approved = await running.cli(
        "escalations", "approve", escalation, "--as", "dana", "--reason", "legal instead",
        "--with", "to=legal@acme.example",
    )  # fmt: skip
    assert "approved with changes" in approved
    await running.until(held, status_is("completed"))
    assert running.mailbox.received[-1]["To"] == "legal@acme.example"
    history = running.history(held)
    [resolved] = of_type(history, "EscalationResolved")
    assert resolved["resolution"]["correctedAction"]["resource"] == "mailto:legal@acme.example"
    sent = [e["evidence"] for e in of_type(history, "EvidenceRecorded")][-1]
    assert (sent["rule"], sent["facts"]["recipient"]) == ("human:dana", "legal@acme.example")
