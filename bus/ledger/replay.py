"""Replay: rebuild a workflow from a recorded event history with today's code.

Like Temporal's replayer, this is how a change to the ledger's events is
checked against histories recorded by earlier versions: every recorded event
must still be understood, in order, and rebuild the same state. A history the
code cannot replay fails with a :class:`ReplayError` that names the event.
It is also how ``claimcheck replay --until N`` shows a workflow as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from bus.ledger.workflow import Workflow
from handoff_schemas import EventEnvelope, evidence_hash


class ReplayError(ValueError):
    """A recorded event today's code cannot apply; the message names it."""

    def __init__(self, event: EventEnvelope, problem: str) -> None:
        super().__init__(
            f"event {event.version} ({event.type}) of workflow {event.workflow_id}: {problem}"
        )
        self.event = event


def event_class(event: EventEnvelope) -> type[Any]:
    found = getattr(Workflow, event.type, None)
    if not isinstance(found, type) or not hasattr(found, "mutate"):
        raise ReplayError(event, "today's code has no such event")
    return found


def replay(history: Sequence[EventEnvelope], until: int | None = None) -> Workflow:
    """The workflow as it was after event ``until`` (all of them by default)."""
    workflow: Workflow | None = None
    expected_version = 1
    for envelope in history:
        if until is not None and envelope.version > until:
            break
        if envelope.version != expected_version:
            raise ReplayError(envelope, f"expected event {expected_version}: the history has a gap")
        workflow = apply(workflow, envelope)
        expected_version += 1
    if workflow is None:
        raise ValueError("an empty history has no workflow")
    return workflow


def apply(workflow: Workflow | None, envelope: EventEnvelope) -> Workflow:
    fields: dict[str, Any] = {
        "originator_id": UUID(envelope.workflow_id),
        "originator_version": envelope.version,
        "timestamp": envelope.timestamp,
        **envelope.data,
    }
    if workflow is None:
        fields["originator_topic"] = get_topic(Workflow)
    # Built the way eventsourcing's mapper loads a stored event (no __init__), so a
    # field added later with a default in the aggregate's method still replays.
    domain_event = object.__new__(event_class(envelope))
    object.__setattr__(domain_event, "__dict__", fields)
    try:
        mutated = domain_event.mutate(workflow)
    except TypeError as error:
        raise ReplayError(envelope, f"its fields do not fit today's event: {error}") from None
    except (KeyError, AttributeError) as error:
        raise ReplayError(envelope, f"today's code cannot apply it: missing {error}") from None
    if envelope.type == "EvidenceRecorded":
        record = envelope.data["evidence"]
        if evidence_hash(record) != record["hash"]:
            raise ReplayError(envelope, f"evidence {record['auditId']} does not match its hash")
    assert mutated is not None
    return mutated


def summary(workflow: Workflow) -> dict[str, Any]:
    """The state a replay must reproduce: what a reader of the workflow relies on."""
    return {
        "status": workflow.status,
        "version": workflow.version,
        "steps": sorted(workflow.steps),
        "checkpoints": workflow.checkpoints,
        "evidence": [record["hash"] for record in workflow.evidence.values()],
        "claims": {cid: claim["verdict"] for cid, claim in workflow.claims.items()},
        "escalations": {eid: esc.get("decision") for eid, esc in workflow.escalations.items()},
        "costUsd": round(workflow.cost_usd, 9),
    }
