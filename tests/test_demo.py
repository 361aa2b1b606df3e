"""The complaint demo across separate OS processes: nats-server, runtime, tool host, two agents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bus.connection import connect
from bus.demo import run_complaints
from bus.ledger import Ledger
from bus.mailbox import Mailbox
from bus.settings import Settings
from bus.stack import Stack
from bus.subjects import Subjects
from handoff_schemas import EventEnvelope
from tests.conftest import ledger_url  # noqa: F401  (the parametrized backend fixture)


async def stream_events(settings: Settings) -> list[EventEnvelope]:
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


async def test_the_demo_workflows_across_processes(tmp_path: Path, ledger_url: str) -> None:  # noqa: F811
    mailbox = Mailbox()
    mailbox.start()
    settings = Settings(state_dir=tmp_path / "state", ledger=ledger_url, smtp_port=mailbox.port)
    try:
        async with Stack(settings) as stack:
            assert {"runtime", "tools", "agent-triage", "agent-notifier"} <= set(stack.processes)
            pids = {process.pid for process in stack.processes.values()}
            assert len(pids) == len(stack.processes) and os.getpid() not in pids
            escalated, routine, denied = await run_complaints(settings, console=_Silent())
            streamed = await stream_events(settings)
    finally:
        mailbox.stop()

    assert [view.status for view in (escalated, routine, denied)] == ["completed"] * 3
    # exactly one email, for the escalated complaint
    assert [m["To"] for m in mailbox.received] == ["support-leads@acme.example"]
    assert "northwind" in mailbox.received[0]["Subject"]
    # the denied complaint: a denial decision, denial evidence, and no email execution
    assert any(
        p["permission"] == "denied" and p["action"] == "send_email" for p in denied.permissions
    )
    assert [t["tool"] for t in denied.tool_executions] == ["create_ticket"]
    assert denied.claims[-1]["verdict"] == "verified" and denied.claims[-1]["asserts"] == "denied"
    # the routine complaint was never handed to the notifier
    assert routine.agents == ["triage"]
    assert escalated.agents == ["triage", "notifier"]
    # every tool execution has its evidence, and every allowed-action evidence its execution
    for view in (escalated, routine, denied):
        executed = Counter((t["tool"], t["status"]) for t in view.tool_executions)
        evidenced = Counter(
            (e.get("tool"), e["status"]) for e in view.evidence if e["permission"] == "allowed"
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
        [sys.executable, "-m", "bus.cli", "demo", "--state-dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SMTP server received 1 email(s)" in result.stdout
    assert result.stdout.count(": completed") == 3
    assert "permission=denied status=denied" in result.stdout
    leftover = subprocess.run(
        ["pgrep", "-f", str(tmp_path / "demo")], capture_output=True, text=True
    )
    assert leftover.stdout == ""


class _Silent:
    def print(self, *args: object, **kwargs: object) -> None:
        pass
