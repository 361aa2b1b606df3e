"""A sweep loads only the workflows that may be due: with thousands open, loading each one
every sweep kept the ledger thread busy and steps waited behind it (on SQLite and
PostgreSQL). A workflow it cannot read holds up no other."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import datetime
from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent

from bus.ledger import Ledger
from bus.runtime import sweeper
from bus.runtime.policy import Deadlines, Policy
from bus.runtime.steps import Steps
from bus.runtime.sweeper import Sweeper, first_and_last_times, is_cached


def started(ledger: Ledger, count: int) -> list[str]:
    handoff = {"to": "triage", "status": "new"}
    workflows = [
        ledger.start(
            ledger.starting(
                "triage_complaint",
                "triage",
                "sha256-" + "0" * 64,
                "test",
                "cli",
                10.0,
                {**handoff, "handoffId": f"ho-{n}"},
            )
        )
        for n in range(count)
    ]
    return [str(workflow.id) for workflow in workflows]


@pytest.fixture
def fresh_steps(ledger_url: str) -> Iterator[Steps]:
    """Steps over a second ledger on the same store: nothing the test wrote is cached."""
    fresh = Ledger.from_url(ledger_url)
    steps = Steps(fresh, lambda: None)
    yield steps
    steps.close()
    fresh.close()


@pytest.fixture
def store_asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The workflows a sweeper asks the store about, in order."""
    asked: list[str] = []

    def counted(ledger: Ledger, workflow_id: str) -> tuple[datetime, datetime] | None:
        asked.append(workflow_id)
        return first_and_last_times(ledger, workflow_id)

    monkeypatch.setattr(sweeper, "first_and_last_times", counted)
    return asked


async def test_a_sweep_loads_no_workflow_too_young_to_be_due(
    ledger: Ledger, fresh_steps: Steps
) -> None:
    workflow_ids = started(ledger, 5)
    assert await Sweeper(fresh_steps, Policy(), 60).sweep() == []
    assert not any(is_cached(fresh_steps.ledger, workflow_id) for workflow_id in workflow_ids)

    stalled = Policy(deadlines=Deadlines(step_lease_seconds=0.001))
    assert sorted(await Sweeper(fresh_steps, stalled, 60).sweep()) == sorted(workflow_ids)


async def test_a_sweep_asks_the_store_only_about_workflows_that_may_be_due(
    ledger: Ledger, fresh_steps: Steps, store_asked: list[str]
) -> None:
    workflow_ids = started(ledger, 5)
    watch = Sweeper(fresh_steps, Policy(deadlines=Deadlines(step_lease_seconds=2.0)), 60)
    assert await watch.sweep() == []
    assert store_asked == []  # too young to be due, as their starts' own times say
    await asyncio.sleep(1.0)
    for n, workflow_id in enumerate(workflow_ids):  # a step: the lease runs from it now
        ledger.command(
            workflow_id, lambda w, n=n: w.resolve_intent("triage", f"ho-{n}", "t", f"ho-{n}/1")
        )
    await asyncio.sleep(1.1)  # due by their starts, so each is asked about once
    assert await watch.sweep() == []
    assert sorted(store_asked) == sorted(workflow_ids)
    assert await watch.sweep() == []
    assert len(store_asked) == len(workflow_ids)  # and not again until its step's lease runs out
    await asyncio.sleep(1.2)
    assert sorted(await watch.sweep()) == sorted(workflow_ids)


async def test_a_start_the_sweeper_cannot_read_is_looked_at_as_before(
    ledger: Ledger, fresh_steps: Steps, store_asked: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow_ids = started(ledger, 3)

    def unreadable(notification: object) -> None:
        raise ValueError("bytes today's code cannot read")

    watch = Sweeper(fresh_steps, Policy(), 60)
    monkeypatch.setattr(watch.workflows._reader, "envelope", unreadable)
    assert await watch.sweep() == []
    assert sorted(store_asked) == sorted(workflow_ids)  # no start time: each is looked at


async def test_a_workflow_the_sweeper_cannot_read_holds_up_no_other(
    ledger: Ledger, fresh_steps: Steps, caplog: pytest.LogCaptureFixture
) -> None:
    """Workflows are swept in order: one that raised used to end the sweep there, every
    sweep, and no workflow after it ever failed or was delivered again."""
    first, *others = sorted(started(ledger, 4))
    (last,) = ledger.recorder.select_events(UUID(first), desc=True, limit=1)
    topic = "bus.ledger.workflow:Workflow.CheckpointReached"
    corrupt = StoredEvent(UUID(first), last.originator_version + 1, topic, b"\0not json")
    ledger.recorder.insert_events([corrupt])
    watch = Sweeper(fresh_steps, Policy(deadlines=Deadlines(step_lease_seconds=0.001)), 60)
    await asyncio.sleep(0.01)
    with caplog.at_level(logging.ERROR, logger=sweeper.__name__):
        assert sorted(await watch.sweep()) == others
        assert first not in await watch.sweep()
    (said,) = [record.getMessage() for record in caplog.records]  # once, not every sweep
    assert first in said


async def test_a_workflow_waiting_on_a_human_is_read_again_only_once_it_records_something(
    ledger: Ledger, fresh_steps: Steps, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An escalated workflow has nothing for the sweeper until a human answers: loaded on
    every sweep, 5,000 of them kept the ledger thread busy 2.7 s a sweep."""
    workflow_ids = started(ledger, 3)
    escalations = [
        ledger.command(
            workflow_id,
            lambda w, n=n: w.raise_escalation("human_review", "check", "triage", f"ho-{n}/1"),
        )
        for n, workflow_id in enumerate(workflow_ids)
    ]
    read: list[str] = []
    reading = fresh_steps.ledger.read
    monkeypatch.setattr(
        fresh_steps.ledger, "read", lambda w, view: read.append(w) or reading(w, view)
    )
    watch = Sweeper(fresh_steps, Policy(deadlines=Deadlines(step_lease_seconds=0.001)), 60)
    await asyncio.sleep(0.01)
    assert await watch.sweep() == []
    assert sorted(read) == sorted(workflow_ids)
    assert await watch.sweep() == []
    assert len(read) == len(workflow_ids)  # not read again: nothing it recorded since

    answered = workflow_ids[0]
    ledger.command(answered, lambda w: w.resolve_escalation(escalations[0], "approve", "ann", "ok"))
    await asyncio.sleep(0.01)
    assert await watch.sweep() == [answered]  # running again: its step lease ran out at once
    assert read[len(workflow_ids) :] == [answered]  # the others are still not read


async def test_a_workflow_a_signal_sets_running_is_found_stalled_before_its_deadline(
    ledger: Ledger, fresh_steps: Steps
) -> None:
    """Waiting for a signal, only its deadline can make it due; once a signal wakes it, the
    step lease counts again, long before that deadline."""
    (workflow_id,) = started(ledger, 1)
    ledger.command(workflow_id, lambda w: w.await_signal("triage", "approval", "ho-0/1"))
    policy = Policy(deadlines=Deadlines(step_lease_seconds=0.001, default_task_seconds=3600))
    watch = Sweeper(fresh_steps, policy, 60)
    await asyncio.sleep(0.01)
    assert await watch.sweep() == []  # waiting: no step is leased

    ledger.command(
        workflow_id, lambda w: w.receive_signal("approval", {}, "ann", "operator", "ok", "sig-1")
    )
    await asyncio.sleep(0.01)
    assert await watch.sweep() == [workflow_id]
