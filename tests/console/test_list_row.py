"""The console's list row follows a workflow's events: the agent it is with, its cost, its
flags (unverified and contradicted claims, denied actions, open escalations) and status,
through the same ``statements`` that feed every read model, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventsourcing.persistence import Tracking

from bus.ledger.view_runner import open_views
from bus.settings import Settings
from handoff_schemas import EventEnvelope
from projections.console_views import workflow_page
from projections.ledger_views import statements

WF = "0b8e7f5e-8a51-4c57-9d0e-1f2a3b4c5d6e"


def claim(claim_id: str, verdict: str) -> dict[str, Any]:
    return {
        "claim": {
            "claimId": claim_id,
            "agent": "notifier",
            "statement": "emailed the team",
            "asserts": "succeeded",
            "verdict": verdict,
            "reason": "why",
            "evidenceIds": [],
        },
        "summary": "emailed the team",
    }


EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("WorkflowStarted", {"task": "triage_complaint", "agent": "triage", "scope": "complaint:x",
                         "budget_usd": 1.0, "started_by": "cli", "artifact_id": "a"}),
    ("HandoffSent", {"handoff": {"from": "triage", "to": "notifier"}}),
    ("ReasoningRecorded", {"agent": "notifier", "model": "m", "cost_usd": 0.25,
                           "usage": {"inputTokens": 10, "outputTokens": 5}}),
    ("PermissionDecided", {"agent": "notifier", "permission": "denied", "action": "send_email",
                           "resource": "mailto:x", "rule": "default-deny", "reason": "no rule",
                           "step_key": "h/4"}),
    ("EscalationRaised", {"escalation": {"escalationId": "esc-1", "kind": "permission_denied",
                                         "agent": "notifier", "reason": "no rule",
                                         "raisedAt": "2026-01-01T00:00:00+00:00"}}),
    ("ClaimMade", claim("c-1", "unverified")),
    ("ClaimMade", claim("c-2", "contradicted")),
    ("ClaimMade", claim("c-3", "verified")),
    ("EscalationResolved", {"resolution": {"escalationId": "esc-1", "decision": "approve",
                                           "approver": "dana", "reason": ""}}),
    ("SignalAwaited", {"name": "go", "agent": "notifier", "step_key": "h/5"}),
    ("SignalReceived", {"name": "go", "woke": True}),
    ("WorkflowResumed", {"handoff": {"from": "runtime", "to": "triage"}, "escalation_id": "e"}),
]  # fmt: skip

EXPECTED = [  # status, agent, cost, unverified, contradicted, denied, open escalations
    ("running", "triage", 0.0, 0, 0, 0, 0),
    ("running", "notifier", 0.0, 0, 0, 0, 0),
    ("running", "notifier", 0.25, 0, 0, 0, 0),
    ("running", "notifier", 0.25, 0, 0, 1, 0),
    ("escalated", "notifier", 0.25, 0, 0, 1, 1),
    ("escalated", "notifier", 0.25, 1, 0, 1, 1),
    ("escalated", "notifier", 0.25, 1, 1, 1, 1),
    ("escalated", "notifier", 0.25, 1, 1, 1, 1),
    ("running", "notifier", 0.25, 1, 1, 1, 0),
    ("waiting", "notifier", 0.25, 1, 1, 1, 0),
    ("running", "notifier", 0.25, 1, 1, 1, 0),
    ("running", "triage", 0.25, 1, 1, 1, 0),
]


def test_the_row_follows_the_events(tmp_path: Path, ledger_url: str) -> None:
    view = open_views(Settings(state_dir=tmp_path / "state", ledger=ledger_url))
    for version, ((kind, data), expected) in enumerate(zip(EVENTS, EXPECTED, strict=True), 1):
        event = EventEnvelope(WF, version, kind, datetime.now(UTC), data)
        view.apply(statements(event), Tracking("test", version))
        (row,) = view.query("SELECT * FROM cc_console_workflows")
        assert (
            row["status"],
            row["agent"],
            row["cost_usd"],
            row["unverified_claims"],
            row["contradicted_claims"],
            row["denied_actions"],
            row["open_escalations"],
        ) == expected, kind
    for verdict in ("flagged", "unverified", "contradicted", "denied"):
        assert workflow_page(view, verdict=verdict)[1] == 1
    assert workflow_page(view, verdict="escalated")[1] == 0
