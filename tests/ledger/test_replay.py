"""Replay, like Temporal's replayer: recorded histories must rebuild the same state with today's
code, and a history today's code cannot apply fails with an error that names the event."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bus.ledger import Ledger
from bus.ledger.replay import ReplayError, replay, summary
from bus.operations.operators import submit
from handoff_schemas import EventEnvelope
from tests.conftest import Bus

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> tuple[list[EventEnvelope], dict[str, Any]]:
    document = json.loads((FIXTURES / f"{name}.json").read_text())
    return msgspec.convert(document["history"], list[EventEnvelope]), document["expected"]


@pytest.mark.parametrize("name", ["routine_complaint", "approved_escalation"])
def test_recorded_histories_replay_into_the_same_state(name: str) -> None:
    history, expected = load(name)
    assert summary(replay(history)) == expected


def test_replay_until_shows_the_workflow_as_it_was() -> None:
    history, _ = load("approved_escalation")
    raised = next(e.version for e in history if e.type == "EscalationRaised")
    assert replay(history, until=raised).status == "escalated"
    assert replay(history, until=raised - 1).status == "running"
    assert replay(history).status == "completed"


def broken(history: list[EventEnvelope], index: int, **changes: Any) -> list[EventEnvelope]:
    copy = list(history)
    copy[index] = msgspec.structs.replace(copy[index], **changes)
    return copy


def test_an_event_todays_code_does_not_know_is_named() -> None:
    history, _ = load("routine_complaint")
    with pytest.raises(ReplayError, match=r"event 5 \(EmailTeleported\).*no such event"):
        replay(broken(history, 4, type="EmailTeleported"))


def test_an_event_whose_fields_changed_is_named() -> None:
    history, _ = load("routine_complaint")
    index = next(i for i, e in enumerate(history) if e.type == "ToolExecuted")
    renamed = {**history[index].data, "duration_seconds": 1.0}
    del renamed["duration_ms"]
    with pytest.raises(ReplayError, match=rf"event {index + 1} \(ToolExecuted\).*do not fit"):
        replay(broken(history, index, data=renamed))


def test_a_gap_in_a_history_is_named() -> None:
    history, _ = load("routine_complaint")
    with pytest.raises(ReplayError, match=r"event 4 \(StepCompleted\).*expected event 3"):
        replay(history[:2] + history[3:])


def test_tampered_evidence_in_a_history_is_named() -> None:
    history, _ = load("routine_complaint")
    index = next(i for i, e in enumerate(history) if e.type == "EvidenceRecorded")
    evidence = {**history[index].data["evidence"], "status": "failed"}
    with pytest.raises(ReplayError, match=rf"event {index + 1} \(EvidenceRecorded\).*hash"):
        replay(broken(history, index, data={"evidence": evidence}))


async def test_a_live_workflow_replays_into_its_aggregate(bus: Bus, ledger: Ledger) -> None:
    started = await submit(bus.nc, bus.subjects, "t", "triage", b"{}")
    request = {
        "workflowId": started.workflow_id,
        "stepKey": "s/1",
        "tool": "create_ticket",
        "payload": {"customer": "c", "title": "t", "severity": "low"},
    }
    await bus.nc.request(
        bus.subjects.runtime("triage", "execute"), json.dumps(request).encode(), timeout=10
    )
    live = ledger.workflow(started.workflow_id)
    assert summary(replay(ledger.history(started.workflow_id))) == summary(live)
