"""A workflow's cost per step does not grow with its own history: the aggregate keeps where
each step's reply is (its event's version), not the reply, and snapshots stay small; every
recorded reply still answers exactly, whether recorded now, in the same group commit,
inline in an older snapshot, or carried over by a reset (on SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from bus.ledger import Ledger, Workflow
from bus.ledger.step_replies import SNAPSHOT_EVERY, snapshot_interval

REFUSAL = {"ok": False, "error": {"code": "permission_denied", "message": "no", "fields": []}}


def start(ledger: Ledger) -> str:
    workflow = ledger.start(ledger.starting(
        "triage_complaint", "triage", "sha256-" + "0" * 64, "test", "cli", 10.0,
        {"handoffId": "ho-1", "to": "triage", "status": "new"},
    ))  # fmt: skip
    return str(workflow.id)


def reply(number: int, size: int = 10) -> dict[str, Any]:
    return {"ok": True, "result": {"n": number, "text": "x" * size}}


def steps(ledger: Ledger, workflow_id: str, count: int, size: int = 10) -> None:
    """``count`` steps recorded in one commit each, as the runtime does."""
    for number in range(count):
        key = f"ho-1/{number}"
        ledger.command(
            workflow_id, lambda wf, k=key, n=number: wf.complete_step(k, "op", reply(n, size))
        )


def latest_snapshot(ledger: Ledger, workflow_id: str) -> bytes:
    assert ledger.snapshots is not None
    found = ledger.snapshots.recorder.select_events(UUID(workflow_id), desc=True, limit=1)
    return found[0].state if found else b""


def test_a_step_asked_again_gets_its_recorded_reply_refusals_included(ledger: Ledger) -> None:
    workflow_id = start(ledger)
    steps(ledger, workflow_id, 3)
    ledger.command(workflow_id, lambda wf: wf.complete_step("ho-1/9", "permit", REFUSAL))
    workflow = ledger.workflow(workflow_id)
    assert ledger.recorded_reply(workflow, "ho-1/1") == reply(1)
    assert ledger.recorded_reply(workflow, "ho-1/9") == REFUSAL
    assert ledger.recorded_reply(workflow, "ho-1/99") is None
    assert ledger.recorded_replies(workflow, ["ho-1/0", "ho-1/2"]) == {
        "ho-1/0": reply(0),
        "ho-1/2": reply(2),
    }


def test_a_step_recorded_earlier_in_the_same_group_commit_answers(ledger: Ledger) -> None:
    workflow_id = start(ledger)
    seen: list[Any] = []
    outcomes = ledger.command_batch(
        [
            (workflow_id, lambda wf: wf.complete_step("ho-1/1", "op", reply(1))),
            (workflow_id, lambda wf: seen.append(ledger.recorded_reply(wf, "ho-1/1"))),
        ]
    )
    assert [outcome.error for outcome in outcomes] == [None, None]
    assert seen == [reply(1)]


def test_a_redone_step_answers_with_its_later_reply(ledger: Ledger) -> None:
    workflow_id = start(ledger)
    ledger.command(workflow_id, lambda wf: wf.complete_step("ho-1/1", "permit", REFUSAL))
    ledger.command(workflow_id, lambda wf: wf.complete_step("ho-1/1", "resolve", reply(1)))
    assert ledger.recorded_reply(ledger.workflow(workflow_id), "ho-1/1") == reply(1)


def test_snapshots_do_not_carry_replies_and_their_interval_grows(
    ledger_url: str, ledger: Ledger
) -> None:
    workflow_id = start(ledger)
    steps(ledger, workflow_id, 150, size=2000)  # 300 KB of replies
    snapshot = latest_snapshot(ledger, workflow_id)
    assert snapshot and b"x" * 2000 not in snapshot
    assert len(snapshot) < 20_000
    restarted = Ledger.from_url(ledger_url)  # loads from the snapshot, nothing cached
    try:
        assert restarted.recorded_reply(restarted.workflow(workflow_id), "ho-1/7") == reply(7, 2000)
    finally:
        restarted.close()
    grown = ledger.workflow(workflow_id)
    grown.steps.update({f"k/{n}": 1 for n in range(5000)})  # a state of 5,000 more entries
    assert snapshot_interval(grown) >= 8 * SNAPSHOT_EVERY


def test_a_snapshot_taken_when_replies_were_inline_still_answers(
    ledger_url: str, ledger: Ledger
) -> None:
    workflow_id = start(ledger)
    steps(ledger, workflow_id, 2)
    old = ledger.workflow(workflow_id)
    old.steps = {"ho-1/0": reply(0), "ho-1/1": reply(1)}  # as snapshots held them before
    assert ledger.snapshots is not None
    ledger.snapshots.put([Workflow.Snapshot.take(old)])  # type: ignore[attr-defined]
    restarted = Ledger.from_url(ledger_url)
    try:
        workflow = restarted.workflow(workflow_id)
        assert workflow.steps["ho-1/1"] == reply(1)  # inline, from the snapshot
        assert restarted.recorded_reply(workflow, "ho-1/1") == reply(1)
        restarted.command(workflow_id, lambda wf: wf.complete_step("ho-1/2", "op", reply(2)))
        workflow = restarted.workflow(workflow_id)
        assert restarted.recorded_replies(workflow, ["ho-1/0", "ho-1/2"]) == {
            "ho-1/0": reply(0),
            "ho-1/2": reply(2),
        }
    finally:
        restarted.close()


def test_a_reset_branch_replays_the_replies_recorded_before_the_reset_point(
    ledger: Ledger,
) -> None:
    workflow_id = start(ledger)
    steps(ledger, workflow_id, 3)
    point = ledger.workflow(workflow_id).version
    steps(ledger, workflow_id, 5)  # 3 and 4 come after the reset point
    branch = ledger.branch(workflow_id, point, None, "ops", "operator", "try again")
    again = ledger.workflow(str(branch.id))
    assert ledger.recorded_reply(again, "ho-1/2") == reply(2)
    assert ledger.recorded_reply(again, "ho-1/4") is None
