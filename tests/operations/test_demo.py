"""The complaint demo across separate OS processes: nats-server, runtime, tool host, two agents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bus.ledger import Ledger
from bus.operations.demo import run_complaints
from bus.operations.mailbox import Mailbox
from bus.operations.operators import resolve, watch
from bus.operations.stack import Stack
from bus.settings import Settings
from bus.transport.connection import connect
from bus.transport.subjects import Subjects
from projections import WorkflowView


async def stream_events(settings: Settings) -> list[dict]:
    """Every message on the events stream, read back with a plain ordered consumer."""
    nc = await connect(settings, "test-reader")
    subjects = Subjects(settings.prefix)
    js = nc.jetstream()
    info = await js.stream_info(subjects.stream("events"))
    subscription = await js.subscribe(f"{settings.prefix}.events.>", ordered_consumer=True)
    found = []
    for _ in range(info.state.messages):
        msg = await subscription.next_msg(timeout=5)
        found.append(json.loads(msg.data))
    await nc.close()
    return found


async def approve_and_wait(settings: Settings, escalation_id: str) -> WorkflowView:
    nc = await connect(settings, "test-approver")
    subjects = Subjects(settings.prefix)
    try:
        result = await resolve(nc, subjects, escalation_id, "approve", "dana", "statement is fine")
        return await watch(
            nc, subjects, result["workflowId"], until=lambda v: v.status == "completed"
        )
    finally:
        await nc.close()


async def test_the_demo_workflows_across_processes(
    tmp_path: Path, ledger_url: str, mailbox: Mailbox
) -> None:
    settings = Settings(state_dir=tmp_path / "state", ledger=ledger_url, smtp_port=mailbox.port)
    async with Stack(settings) as stack:
        assert {"runtime", "tools", "agent-triage", "agent-notifier"} <= set(stack.processes)
        pids = {process.pid for process in stack.processes.values()}
        assert len(pids) == len(stack.processes) and os.getpid() not in pids
        escalated, routine, denied = await run_complaints(settings, console=_Silent())
        emails_before_approval = [m["To"] for m in mailbox.received]
        approved = await approve_and_wait(settings, denied.escalations[0]["escalationId"])
        streamed = await stream_events(settings)

    statuses = [view.status for view in (escalated, routine, denied)]
    assert statuses == ["completed", "completed", "escalated"]
    # one email, for the escalated complaint, until a human approved the denied one
    assert emails_before_approval == ["support-leads@acme.example"]
    assert "northwind" in mailbox.received[0]["Subject"]
    # the denied complaint: a denial decision and evidence, no email execution, an escalation
    assert any(
        p["permission"] == "denied" and p["action"] == "send_email" for p in denied.permissions
    )
    assert [t["tool"] for t in denied.tool_executions] == ["create_ticket"]
    assert denied.escalations[0]["kind"] == "permission_denied"
    assert denied.escalations[0]["action"]["resource"] == "mailto:press@pr-agency.example"
    # approved: the notifier resumed, the email went out once, the human's grant its permission
    assert approved.status == "completed"
    sent_to = [m["To"] for m in mailbox.received]
    assert sent_to == ["support-leads@acme.example", "press@pr-agency.example"]
    [grant] = [e for e in approved.evidence if e["permission"] == "approved"]
    assert (grant["rule"], grant["status"]) == ("human:dana", "succeeded")
    assert approved.claims[-1]["verdict"] == "verified"
    # the routine complaint was never handed to the notifier
    assert routine.agents == ["triage"]
    assert escalated.agents == ["triage", "notifier"]
    # every tool execution has its evidence, and every executed-action evidence its execution
    for view in (escalated, routine, approved):
        executed = Counter((t["tool"], t["status"]) for t in view.tool_executions)
        evidenced = Counter(
            (e["tool"], e["status"]) for e in view.evidence if e["permission"] != "denied"
        )
        assert executed == evidenced and executed

    # every ledger event appears exactly once on the events stream, in ledger order
    ledger = Ledger.from_url(ledger_url)
    try:
        notifications = ledger.notifications(0, limit=10_000)
    finally:
        ledger.close()
    positions = [event["position"] for event in streamed]
    assert positions == [n.id for n in notifications]
    assert len(set(positions)) == len(positions)


def test_the_demo_command_runs_and_stops_everything(tmp_path: Path) -> None:
    """The README's demo command, as a new user runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "bus.operations.cli", "demo", "--state-dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SMTP server received 1 email(s)" in result.stdout
    assert result.stdout.count(": completed") == 2
    assert result.stdout.count(": escalated") == 1
    assert "permission=denied status=denied" in result.stdout
    assert "claimcheck escalations approve esc-" in result.stdout
    # progress while the workflows ran: one line as each settled, before the report
    assert "[3/3] workflow " in result.stdout
    assert result.stdout.index("waits for a human") < result.stdout.index("SMTP server received")
    leftover = subprocess.run(
        ["pgrep", "-f", str(tmp_path / "demo")], capture_output=True, text=True
    )
    assert leftover.stdout == ""


class _Silent:
    def print(self, *args: object, **kwargs: object) -> None:
        pass
