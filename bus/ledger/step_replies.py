"""Recorded step replies kept in the events that recorded them, not in the aggregate.

A workflow's cost per step must not grow with its own history. The aggregate used to keep
every step's reply (``steps``: key -> reply), so every snapshot serialized every reply ever
recorded, and a long workflow paid for its past on each one. Deciding a step needs only
whether its key was recorded (and by whom), so the aggregate keeps, per step key, the
version of the ``StepCompleted`` event that holds the reply; the body is read from that one
stored event when a step is asked again, which is rare (a redelivered handler, a retry).

A recorded value that is not a version is the reply itself: snapshots taken before, and the
state a reset branch carries over (:func:`carried_steps`), hold replies inline, and they
still answer.

Snapshots follow the same rule: their interval grows with the state they serialize
(:func:`snapshot_interval`), so the bytes encoded per event stay bounded however long the
workflow runs, while loading one still replays at most an interval of events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from handoff_schemas import EventEnvelope

if TYPE_CHECKING:
    from bus.ledger.store import Ledger
    from bus.ledger.workflow import Workflow

SNAPSHOT_EVERY = 100
"""The shortest snapshot interval, in events: a small workflow's, as before."""
ENTRIES_PER_INTERVAL_EVENT = 8
"""State entries (steps, evidence, checkpoints...) per event of interval: a snapshot of
``n`` entries is taken every ``n / 8`` events or so, so each event pays for about 8 entries'
encoding, however large the workflow grows."""
DENSE = 4
"""A page of replies is read as one range of events when the range is at most this many
times the page (a handling's steps are close together); else one event at a time."""


def is_version(recorded: Any) -> bool:
    """A recorded step value that points at its ``StepCompleted`` event (not a reply)."""
    return isinstance(recorded, int) and not isinstance(recorded, bool)


def step_outcome(workflow: Any, step_key: str) -> str:
    """What decisions read of a recorded step's reply: ``failed``, ``signal:<name>`` (a wait
    that read a signal) or ``""``; from the reply itself when it is kept inline."""
    recorded = workflow.steps[step_key]
    if is_version(recorded):
        return str(workflow.__dict__.get("step_outcomes", {}).get(step_key, ""))
    if not recorded.get("ok", True):
        return "failed"
    result = recorded.get("result")
    if isinstance(result, dict) and result.get("signalId"):
        return f"signal:{result.get('name')}"
    return ""


def recorded_reply(ledger: Ledger, workflow: Workflow, step_key: str) -> Any | None:
    """The reply recorded for ``step_key`` (None: the step never completed)."""
    recorded = workflow.steps.get(step_key)
    if not is_version(recorded):
        return recorded
    return recorded_replies(ledger, workflow, [step_key])[step_key]


def recorded_replies(
    ledger: Ledger, workflow: Workflow, step_keys: Sequence[str]
) -> dict[str, Any]:
    """The replies of recorded steps, read from the events that recorded them.

    An event not committed yet (a step completed earlier in the same group commit) is read
    from the aggregate's pending events.
    """
    wanted = {key: workflow.steps[key] for key in step_keys}
    versions = {value for value in wanted.values() if is_version(value)}
    bodies = {
        event.originator_version: event.result
        for event in workflow.pending_events
        if event.originator_version in versions
    }
    stored = sorted(versions - bodies.keys())
    if stored:
        bodies.update(stored_results(ledger, workflow, stored))
    return {key: bodies[value] if is_version(value) else value for key, value in wanted.items()}


def stored_results(ledger: Ledger, workflow: Workflow, versions: list[int]) -> dict[int, Any]:
    """The ``result`` of the stored events at ``versions`` (sorted) of ``workflow``."""
    low, high = versions[0], versions[-1]
    if high - low + 1 <= DENSE * len(versions):
        ranges: Iterable[tuple[int, int]] = [(low, high)]
    else:
        ranges = ((version, version) for version in versions)
    wanted, found = set(versions), {}
    for first, last in ranges:
        for item in ledger.recorder.select_events(workflow.id, gt=first - 1, lte=last):
            if item.originator_version in wanted:
                event = ledger.mapper.to_domain_event(item)
                found[item.originator_version] = event.result  # type: ignore[attr-defined]
    return found


def carried_steps(history: Sequence[EventEnvelope], until: int) -> dict[str, Any]:
    """Each step's reply as of event ``until``, inline: what a reset branch carries over,
    since its own events are not the ones that recorded them."""
    replies: dict[str, Any] = {}
    for envelope in history:
        if envelope.version > until:
            break
        if envelope.type == "StepCompleted":
            replies[envelope.data["step_key"]] = envelope.data["result"]
        elif envelope.type == "BranchStarted":
            replies.update(envelope.data["state"].get("steps", {}))
    return replies


def state_entries(workflow: Workflow) -> int:
    """How much state a snapshot of ``workflow`` serializes, counted in entries."""
    return (
        len(workflow.steps)
        + len(workflow.evidence)
        + len(workflow.checkpoints)
        + len(workflow.handoffs)
        + len(workflow.claims)
        + len(workflow.failures)
    )


def snapshot_interval(workflow: Workflow) -> int:
    """Events between snapshots: 100, doubled as the state grows (so boundaries stay
    multiples of each other and a workflow's snapshots stay evenly spaced)."""
    grown = state_entries(workflow) // (SNAPSHOT_EVERY * ENTRIES_PER_INTERVAL_EVENT)
    return SNAPSHOT_EVERY * 2 ** grown.bit_length()


def snapshot_due(workflow: Workflow, saved_events: int) -> bool:
    """Whether the events just saved took ``workflow`` across a snapshot boundary."""
    interval = snapshot_interval(workflow)
    return (workflow.version - saved_events) // interval < workflow.version // interval
