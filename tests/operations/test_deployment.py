"""A command reaches the deployment its settings name, or none: never a stranger's server.

With the stack down, read commands answer from the ledger and say so; write commands fail
and say how to start the stack. Two operators answering one escalation: one wins.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from bus.operations.mailbox import Mailbox
from bus.operations.stack import Stack
from bus.settings import Settings
from bus.transport.server import EmbeddedNats
from tests.conftest import CLI, claimcheck, open_escalation, submit_press_complaint


async def escalated_then_stopped(tmp_path: Path, mailbox: Mailbox) -> tuple[Path, str, str]:
    """A stack that escalated the press complaint, then was stopped: (state dir, wf, its server)."""
    settings = Settings(state_dir=tmp_path / "state", smtp_port=mailbox.port)
    async with Stack(settings) as stack:
        assert stack.nats is not None
        server = stack.nats.name
        workflow_id = await asyncio.to_thread(submit_press_complaint, settings.state_dir, tmp_path)
        await asyncio.to_thread(open_escalation, settings.state_dir, workflow_id)
    return settings.state_dir, workflow_id, server


def assert_read_from_the_ledger(state_dir: Path, workflow_id: str, why: str) -> None:
    listed = claimcheck("escalations", "list", "--json", state_dir=state_dir)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert [e["workflowId"] for e in json.loads(listed.stdout)] == [workflow_id]
    assert why in listed.stderr and "reading the ledger" in listed.stderr

    status = claimcheck("status", "--json", state_dir=state_dir)
    [row] = json.loads(status.stdout)
    assert row["waiting"].startswith("a human: escalation esc-"), row

    verified = claimcheck("verify", state_dir=state_dir)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "intact: 1 workflow(s)" in verified.stdout
    assert "the events stream was not compared" in verified.stdout

    audited = claimcheck("audit", "follow", "--idle", "1", state_dir=state_dir)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert "ok    evidence" in audited.stdout and "denied" in audited.stdout

    submitted = claimcheck(
        "submit", "t", "--to", "triage", "--input", __file__, state_dir=state_dir
    )
    assert submitted.returncode == 1
    assert "needs the running stack" in submitted.stdout
    assert f"claimcheck up --state-dir {state_dir}" in submitted.stdout.replace("\n", "")


async def test_with_the_stack_down_reads_use_the_ledger_and_writes_say_how_to_start_it(
    tmp_path: Path, mailbox: Mailbox
) -> None:
    state_dir, workflow_id, _ = await escalated_then_stopped(tmp_path, mailbox)
    assert not (state_dir / "nats.url").exists()
    await asyncio.to_thread(
        assert_read_from_the_ledger, state_dir, workflow_id, "no NATS server is named"
    )


async def test_a_stale_nats_url_never_reaches_the_server_now_on_that_port(
    tmp_path: Path, mailbox: Mailbox
) -> None:
    """Another nats-server (no claimcheck streams, no users) now answers where the stack was."""
    state_dir, workflow_id, old_server = await escalated_then_stopped(tmp_path, mailbox)
    stranger = EmbeddedNats(tmp_path / "stranger")
    await stranger.start()
    try:
        (state_dir / "nats.url").write_text(stranger.url)
        (state_dir / "nats.server").write_text(old_server)
        await asyncio.to_thread(
            assert_read_from_the_ledger, state_dir, workflow_id, "that stack is gone"
        )
    finally:
        await stranger.stop()


def test_two_operators_approving_at_once_exactly_one_wins(
    running_stack: Path, tmp_path: Path, mailbox: Mailbox
) -> None:
    workflow_id = submit_press_complaint(running_stack, tmp_path)
    escalation = open_escalation(running_stack, workflow_id)
    approve = [*CLI, "escalations", "approve", escalation["escalationId"], "--state-dir"]
    operators = [
        subprocess.Popen(
            [*approve, str(running_stack), "--as", who], stdout=subprocess.PIPE, text=True
        )
        for who in ("dana", "sam")
    ]
    outcomes = sorted((op.wait(timeout=60), op.communicate()[0]) for op in operators)
    assert [code for code, _ in outcomes] == [0, 1]
    assert "already resolved" in outcomes[1][1]
    answered = claimcheck(
        "escalations", "show", escalation["escalationId"], state_dir=running_stack
    )
    approver = json.loads(answered.stdout)["resolution"]["approver"]
    assert (
        approver in ("dana", "sam") and f"approved {escalation['escalationId']}" in outcomes[0][1]
    )
