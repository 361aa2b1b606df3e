"""Why an open workflow waits, as the workflow-state read model tells it (``WorkflowView.waiting``):
for which agent since when, on which escalation, or until which retry time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from handoff_schemas import EventEnvelope
from projections import WorkflowView

AT = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
HANDOFF = {"handoffId": "ho-1", "to": "triage"}


def view_of(*events: tuple[str, dict[str, Any]]) -> WorkflowView:
    view = WorkflowView("wf")
    for version, (kind, data) in enumerate(events, start=1):
        view.apply(
            EventEnvelope(workflow_id="wf", version=version, type=kind, timestamp=AT, data=data)
        )
    return view


STARTED = ("WorkflowStarted", {"task": "t"})
SENT = ("HandoffSent", {"handoff": HANDOFF})


def test_a_running_workflow_waits_on_the_agent_it_was_handed_to() -> None:
    assert view_of(STARTED, SENT).waiting == (
        "agent triage (handoff ho-1) since 2026-11-25T12:00:00+00:00"
    )


def test_a_workflow_waiting_out_a_tool_host_says_until_when() -> None:
    unavailable = {
        "tool": "send_email",
        "attempt": 2,
        "kind": "no_responders",
        "retry_in_seconds": 0.8,
        "window_ends_at": "2026-11-25T12:01:00+00:00",
    }
    waiting = view_of(STARTED, SENT, ("ToolUnavailable", unavailable)).waiting
    assert waiting.startswith("a tool host for send_email (attempt 2: no_responders)")
    assert waiting.endswith("at most until 2026-11-25T12:01:00+00:00")


def test_a_workflow_before_a_retry_says_which_attempt() -> None:
    decision = {"strategy": "retry", "attempt": 1, "max_attempts": 3, "delay_seconds": 0.2}
    retry = ("RetryDecided", {"kind": "tool_error", "decision": decision, "step_key": "ho-1/2"})
    waiting = view_of(STARTED, SENT, retry).waiting
    assert waiting.startswith("a retry of tool_error (attempt 1 of 3)")


def test_an_escalated_workflow_names_its_open_escalation() -> None:
    escalation = {
        "escalationId": "esc-1",
        "kind": "step_stalled",
        "reason": "no progress",
        "raisedAt": "2026-11-25T12:00:00Z",
    }
    view = view_of(STARTED, SENT, ("EscalationRaised", {"escalation": escalation}))
    assert view.waiting == (
        "a human: escalation esc-1 (step_stalled) raised 2026-11-25T12:00:00Z: no progress"
    )


def test_a_closed_workflow_waits_for_nothing() -> None:
    assert view_of(STARTED, SENT, ("WorkflowFailed", {"reason": "x"})).waiting == ""
