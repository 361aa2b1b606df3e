"""Group commit: many commands, one transaction, each answered as if it had run alone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bus.ledger import Ledger, Workflow
from bus.ledger.errors import WorkflowClosed
from bus.runtime.steps import Steps
from tests.ledger.test_ledger import ARTIFACT, start


def checkpoint(name: str) -> Any:
    def change(workflow: Workflow) -> str:
        workflow.reach_checkpoint("triage", name, {}, f"step-{name}")
        return name

    return change


def broken(workflow: Workflow) -> None:
    workflow.reach_checkpoint("triage", "half", {}, "step-half")
    raise RuntimeError("a bug after the first event")


def refused(workflow: Workflow) -> None:
    workflow.reject_handoff({"to": "x"}, "recorded before refusing")
    raise WorkflowClosed("refused")


def counting_saves(ledger: Ledger) -> list[int]:
    """How many aggregates each ``save`` (one transaction) carried."""
    saves: list[int] = []
    save = ledger.save

    def spy(*aggregates: Any, **kwargs: Any) -> Any:
        saves.append(len(aggregates))
        return save(*aggregates, **kwargs)

    ledger.save = spy  # type: ignore[method-assign]
    return saves


def test_a_batch_commits_once_and_keeps_each_outcome(ledger: Ledger) -> None:
    first, second = start(ledger), start(ledger)
    saves = counting_saves(ledger)
    outcomes = ledger.command_batch(
        [(first, checkpoint("a")), (second, checkpoint("b")), (first, refused)]
    )
    assert saves == [2]
    assert outcomes[0].unwrap() == "a" and outcomes[1].unwrap() == "b"
    with pytest.raises(WorkflowClosed):
        outcomes[2].unwrap()
    types = [event.type for event in ledger.history(first)]
    assert types[-2:] == ["CheckpointReached", "HandoffRejected"]  # the refusal's reason kept
    assert ledger.workflow(second).checkpoints == {"b": {}}


def test_a_failing_change_loses_nothing_of_its_neighbours(ledger: Ledger) -> None:
    workflow_id = start(ledger)
    outcomes = ledger.command_batch(
        [
            (workflow_id, checkpoint("before")),
            (workflow_id, broken),
            (workflow_id, checkpoint("after")),
        ]
    )
    assert [o.error is None for o in outcomes] == [True, False, True]
    assert isinstance(outcomes[1].error, RuntimeError)
    checkpoints = ledger.workflow(workflow_id).checkpoints
    assert set(checkpoints) == {"before", "after"}  # the broken change's event is not kept
    assert "half" not in checkpoints


def racing(other: Ledger, workflow_id: str, races: int) -> Any:
    """A change during which another replica commits to the same workflow, ``races`` times."""
    raced: list[str] = []

    def change(workflow: Workflow) -> str:
        if len(raced) < races:  # another replica commits between this read and this save
            raced.append(other.command(workflow_id, checkpoint(f"elsewhere{len(raced)}")))
        return checkpoint("here")(workflow)

    return change


def test_a_batch_that_meets_another_replica_commits_again_as_one(ledger_url: str) -> None:
    """Two replicas sharing the work meet each other's writes in nearly every batch: the
    batch runs again whole, not one commit per change, and then reads before changing."""
    ledger, other = Ledger.from_url(ledger_url), Ledger.from_url(ledger_url)
    try:
        first, second = start(ledger), start(ledger)
        saves = counting_saves(ledger)
        outcomes = ledger.command_batch(
            [(first, racing(other, first, 1)), (second, checkpoint("b")), (first, checkpoint("c"))]
        )
        assert [outcome.unwrap() for outcome in outcomes] == ["here", "b", "c"]
        assert saves == [2, 2]  # the batch that met the write, then the same batch again
        assert set(ledger.workflow(first).checkpoints) == {"elsewhere0", "here", "c"}
        other.command(second, checkpoint("elsewhere"))
        saves.clear()
        assert ledger.command_batch([(second, checkpoint("d"))])[0].unwrap() == "d"
        assert saves == [1]  # caught up first: no conflict
        assert set(ledger.workflow(second).checkpoints) == {"b", "elsewhere", "d"}
    finally:
        other.close()
        ledger.close()


def test_a_batch_that_meets_another_replica_twice_runs_each_change_alone(
    ledger_url: str,
) -> None:
    ledger, other = Ledger.from_url(ledger_url), Ledger.from_url(ledger_url)
    try:
        workflow_id = start(ledger)
        outcomes = ledger.command_batch(
            [(workflow_id, racing(other, workflow_id, 2)), (workflow_id, checkpoint("too"))]
        )
        assert [outcome.unwrap() for outcome in outcomes] == ["here", "too"]
        stored = set(ledger.workflow(workflow_id).checkpoints)
        assert stored == {"elsewhere0", "elsewhere1", "here", "too"}
    finally:
        other.close()
        ledger.close()


async def test_concurrent_commands_share_commits_and_are_answered_after_them(
    ledger: Ledger,
) -> None:
    workflows = [start(ledger) for _ in range(4)]
    saves = counting_saves(ledger)
    steps = Steps(ledger, on_commit=lambda: None)
    try:
        names = await asyncio.gather(
            *(steps.command(workflows[i % 4], checkpoint(f"c{i}")) for i in range(40))
        )
        assert names == [f"c{i}" for i in range(40)]
        assert sum(saves) >= 4 and len(saves) < 40  # shared commits
        for index, workflow_id in enumerate(workflows):
            stored = ledger.workflow(workflow_id).checkpoints
            assert set(stored) == {f"c{i}" for i in range(index, 40, 4)}
    finally:
        steps.close()


def test_starts_share_a_batch_and_a_repeated_request_finds_its_workflow(ledger: Ledger) -> None:
    """Starts commit with the other commands; a start asked again (same request id) in a
    later batch, or twice in one, returns the workflow the first made."""

    def starting(request_id: str) -> Any:
        handoff = {"handoffId": f"ho-{request_id}", "to": "triage", "status": "new"}
        return ledger.starting("t", "triage", ARTIFACT, "s", "cli", 1.0, handoff, "", request_id)

    first = start(ledger)
    saves = counting_saves(ledger)
    new, other = starting("r1"), starting("")
    outcomes = ledger.command_batch(
        [(new.workflow_id, new), (first, checkpoint("a")), (other.workflow_id, other)]
    )
    assert saves == [3]
    made = outcomes[0].unwrap()
    assert str(made.id) == new.workflow_id
    again = ledger.command_batch([(new.workflow_id, new), (new.workflow_id, starting("r1"))])
    assert {str(outcome.unwrap().id) for outcome in again} == {str(made.id)}
    assert len(ledger.workflow_ids()) == 3
