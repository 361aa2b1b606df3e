"""The auditor: read-only credentials, every evidence record exactly once in chain order, and the
CLI's clear errors for bad input."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bus.ledger import Ledger
from bus.operations.demo import run_complaints
from bus.operations.mailbox import Mailbox
from bus.operations.operators import resolve, watch
from bus.operations.stack import Stack
from bus.settings import Settings
from bus.transport.connection import connect
from bus.transport.subjects import Subjects
from tests.conftest import claimcheck


@pytest.fixture
async def demo_run(tmp_path: Path, mailbox: Mailbox) -> AsyncIterator[tuple[Stack, list[str]]]:
    """The demo's three complaints, the escalated one approved, with the stack still up."""
    settings = Settings(state_dir=tmp_path / "state", smtp_port=mailbox.port)
    async with Stack(settings) as stack:
        views = await run_complaints(settings, _Silent())
        nc = await connect(settings, "test")
        subjects = Subjects(settings.prefix)
        await resolve(nc, subjects, views[2].escalations[0]["escalationId"], "approve", "dana")
        await watch(nc, subjects, views[2].workflow_id, until=lambda v: v.status == "completed")
        await nc.close()
        yield stack, [view.workflow_id for view in views]


async def test_the_auditor_gets_every_evidence_record_once_in_chain_order(
    demo_run: tuple[Stack, list[str]],
) -> None:
    stack, workflows = demo_run
    state_dir = stack.settings.state_dir
    followed = claimcheck("audit", "follow", "--strict", "--idle", "2", state_dir=state_dir)
    assert followed.returncode == 0, followed.stdout + followed.stderr
    seen = [
        line.split()[2].rstrip(":")
        for line in followed.stdout.splitlines()
        if line.startswith("ok")
    ]

    ledger = Ledger.from_url(stack.settings.ledger_url())
    try:
        chains = {wf: list(ledger.workflow(wf).evidence) for wf in workflows}
    finally:
        ledger.close()
    assert sorted(seen) == sorted(eid for chain in chains.values() for eid in chain)
    assert len(seen) == len(set(seen)) == 6  # exactly once: 2 + 1 + 3 records
    by_workflow: dict[str, list[str]] = defaultdict(list)
    owner = {eid: wf for wf, chain in chains.items() for eid in chain}
    for eid in seen:
        by_workflow[owner[eid]].append(eid)
    assert dict(by_workflow) == chains  # in chain order within each workflow
    assert "BREAK" not in followed.stdout


async def test_the_auditor_cannot_publish_and_strict_mode_stops_at_a_forged_record(
    demo_run: tuple[Stack, list[str]],
) -> None:
    stack, workflows = demo_run
    auditor = stack.settings.model_copy(update={"credentials": stack.credentials["auditor"]})
    nc = await connect(auditor, "test-auditor")
    violations: list[str] = []
    nc._error_cb = lambda error: violations.append(str(error))  # type: ignore[assignment]
    await nc.publish(Subjects().evidence(workflows[0]), b"{}")
    await nc.flush()
    await nc.close()

    # a forged record on the evidence stream (only the runtime's credentials can put it there)
    runtime = stack.settings.model_copy(update={"credentials": stack.credentials["runtime"]})
    nc = await connect(runtime, "test-forger")
    forged = {
        "auditId": "ev-forged",
        "workflowId": workflows[0],
        "status": "succeeded",
        "prevHash": "0" * 64,
        "hash": "f" * 64,
    }
    await nc.jetstream().publish(Subjects().evidence(workflows[0]), json.dumps(forged).encode())
    await nc.close()
    followed = claimcheck(
        "audit", "follow", "--strict", "--idle", "2", state_dir=stack.settings.state_dir
    )
    assert followed.returncode == 1
    assert "BREAK evidence ev-forged" in followed.stdout
    assert "Traceback" not in followed.stdout + followed.stderr


async def test_bad_input_gets_a_message_and_a_non_zero_exit(
    demo_run: tuple[Stack, list[str]],
) -> None:
    stack, workflows = demo_run
    state_dir = stack.settings.state_dir
    cases = {
        ("replay", workflows[0], "--until", "999"): "outside this workflow's events",
        ("replay", workflows[0], "--until", "0"): "outside this workflow's events",
        ("replay", "00000000-0000-0000-0000-000000000000"): "no workflow",
        ("trace", "not-a-workflow"): "no workflow",
        ("status", "00000000-0000-0000-0000-000000000000"): "no workflow",
        ("verify", "not-a-workflow"): "no workflow",
        ("escalations", "approve", "esc-nope", "--as", "dana"): "no escalation",
    }
    for args, message in cases.items():
        result = claimcheck(*args, state_dir=state_dir)
        assert result.returncode == 1, args
        assert message in result.stdout, (args, result.stdout)
        assert "Traceback" not in result.stdout + result.stderr, args
    good = claimcheck("replay", workflows[0], "--until", "2", state_dir=state_dir)
    assert json.loads(good.stdout)["version"] == 2
    trace = claimcheck("trace", workflows[2], state_dir=state_dir).stdout
    for expected in (
        "believed",
        "runtime: denied by rule default-deny",
        "escalated to a human",
        "dana approved",
        "approved by human:dana",
        "-> verified",
    ):
        assert expected in trace


class _Silent:
    def print(self, *args: object, **kwargs: object) -> None:
        pass
