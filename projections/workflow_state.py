"""The workflow-state read model: what happened in a workflow, folded from its events.

It reads only :class:`~handoff_schemas.EventEnvelope` values, so it is built the
same from the ledger (``claimcheck events``) or from the events stream (an
outside subscriber), and a rebuild gives the same view as the live one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from handoff_schemas import EventEnvelope

log = logging.getLogger(__name__)

CLOSED = ("completed", "failed", "stopped", "cancelled", "terminated", "reset")
"""Statuses after which a workflow takes no more actions."""
OPERATOR_STATUS = {"WorkflowCancelled": "cancelled", "WorkflowTerminated": "terminated"}
STATUS_BY_EVENT = {
    "EscalationRaised": "escalated",
    "WorkflowCompleted": "completed",
    "WorkflowFailed": "failed",
    "WorkflowStopped": "stopped",
    "BudgetExceeded": "stopped",
    "WorkflowCancelled": "cancelled",
    "WorkflowTerminated": "terminated",
    "WorkflowReset": "reset",
    "WorkflowRetried": "running",
    "SignalAwaited": "waiting",
}
"""The status each of these events gives a workflow in the SQL views (both tables)."""


@dataclass
class WorkflowView:
    workflow_id: str
    task: str = ""
    status: str = "unknown"
    last_event: str = ""
    events: int = 0
    agents: list[str] = field(default_factory=list)
    checkpoints: dict[str, Any] = field(default_factory=dict)
    checkpoint_backing: dict[str, list[str]] = field(default_factory=dict)
    """Checkpoint name -> the evidence that backs it; empty: only the agent's word."""
    permissions: list[dict[str, Any]] = field(default_factory=list)
    tool_executions: list[dict[str, Any]] = field(default_factory=list)
    tool_unavailable: list[dict[str, Any]] = field(default_factory=list)
    unknown_outcomes: list[dict[str, Any]] = field(default_factory=list)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    external_checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Evidence id -> what the tool's own system said of it (``verify --external``)."""
    claims: list[dict[str, Any]] = field(default_factory=list)
    handoffs: list[dict[str, Any]] = field(default_factory=list)
    rejected_handoffs: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    """What agents reported when a handler failed: kind, message, bounded stack trace."""
    controls: list[dict[str, Any]] = field(default_factory=list)
    """What operators did from outside (cancel, terminate, retry, signal, reset), with who
    and why."""
    reset_from: dict[str, Any] | None = None
    reset_to: str = ""
    escalations: list[dict[str, Any]] = field(default_factory=list)
    resolutions: list[dict[str, Any]] = field(default_factory=list)
    outcome: str = ""
    last_event_at: datetime | None = None
    last_retry: dict[str, Any] | None = None

    def apply(self, event: EventEnvelope) -> None:
        """Fold one event; one whose data lacks what its type promises is logged and skipped."""
        try:
            self._apply(event)
        except (KeyError, TypeError, AttributeError) as error:
            log.warning("skipped a malformed %s event: %r", event.type, error)

    def _apply(self, event: EventEnvelope) -> None:
        data = event.data
        self.events += 1
        self.last_event = event.type
        self.last_event_at = event.timestamp
        if event.type == "RetryDecided":
            self.last_retry = data
        match event.type:
            case "WorkflowStarted":
                self.task, self.status = data["task"], "running"
            case "HandoffSent":
                self.handoffs.append(data["handoff"])
                if data["handoff"]["to"] not in self.agents:
                    self.agents.append(data["handoff"]["to"])
            case "HandoffRejected":
                self.rejected_handoffs.append({**data["handoff"], "reason": data["reason"]})
            case "PermissionDecided":
                self.permissions.append(data)
            case "ToolExecuted":
                self.tool_executions.append(data)
            case "ToolUnavailable":
                self.tool_unavailable.append(data)
            case "ToolOutcomeUnknown":
                self.unknown_outcomes.append(data)
            case "EvidenceRecorded":
                self.evidence.append(data["evidence"])
            case "EvidenceChecked":
                self.external_checks[data["check"]["evidenceId"]] = data["check"]
            case "CheckpointReached":
                self.checkpoints[data["name"]] = data["data"]
                self.checkpoint_backing[data["name"]] = list(data.get("backed_by") or [])
            case "FailureClassified":
                self.failures.append(data)
            case "ClaimMade":
                self.claims.append({**data["claim"], "summary": data["summary"]})
                self.outcome = data["summary"]
            case "EscalationRaised":
                self.status = "escalated"
                self.escalations.append(data["escalation"])
            case "EscalationResolved":
                self.resolutions.append(data["resolution"])
                if data["resolution"]["decision"] == "approve":
                    self.status = "running"
            case "BudgetExceeded" | "WorkflowStopped":
                self.status = "stopped"
                self.outcome = data["reason"]
            case "WorkflowCompleted":
                self.status = "completed"
            case "WorkflowFailed":
                self.status = "failed"
                self.outcome = data["reason"]
            case "FaultReported":
                self.faults.append(data)
            case "WorkflowCancelled" | "WorkflowTerminated":
                self.status = OPERATOR_STATUS[event.type]
                self.outcome = f"{self.status} by {data['by']}: {data['reason']}"
                self.controls.append({"event": event.type, **data})
            case "WorkflowRetried":
                self.status = "running"
                self.controls.append({"event": event.type, **data})
            case "SignalAwaited":
                self.status = "waiting"
            case "SignalReceived":
                self.controls.append({"event": event.type, **data})
                if data.get("woke"):
                    self.status = "running"
            case "BranchStarted":
                self.reset_from = {"workflowId": data["source"], "version": data["version"]}
                self.controls.append(
                    {"event": event.type, **{k: v for k, v in data.items() if k != "state"}}
                )
            case "WorkflowReset":
                self.status, self.reset_to = "reset", data["branch"]
                self.outcome = (
                    f"reset by {data['by']} to continue as {data['branch']}: {data['reason']}"
                )
                self.controls.append({"event": event.type, **data})

    @property
    def waiting(self) -> str:
        """Why an open workflow waits, and on whom: ``""`` once it is closed."""
        if self.status in CLOSED:
            return ""
        if self.status == "waiting":
            return f"an operator's signal (`claimcheck workflows signal {self.workflow_id} NAME`)"
        if self.status == "escalated":
            resolved = {r["escalationId"] for r in self.resolutions}
            return "; ".join(
                f"a human: escalation {e['escalationId']} ({e['kind']}) raised {e['raisedAt']}: "
                f"{e['reason']}"
                for e in self.escalations
                if e["escalationId"] not in resolved
            )
        since = self.last_event_at.isoformat(timespec="seconds") if self.last_event_at else "?"
        if self.last_event == "ToolUnavailable":
            wait = self.tool_unavailable[-1]
            return (
                f"a tool host for {wait['tool']} (attempt {wait['attempt']}: {wait['kind']}); "
                f"next try {wait['retry_in_seconds']} s after {since}, "
                f"at most until {wait['window_ends_at']}"
            )
        retry = self.last_retry
        if self.last_event == "RetryDecided" and retry and retry["decision"]["strategy"] == "retry":
            decision = retry["decision"]
            return (
                f"a retry of {retry['kind']} (attempt {decision['attempt']} of "
                f"{decision['max_attempts']}) {decision['delay_seconds']} s after {since}"
            )
        if self.handoffs:
            handoff = self.handoffs[-1]
            faults = [f for f in self.faults if f["handoff_id"] == handoff["handoffId"]]
            failed = (
                f"; delivery {faults[-1]['delivery']} failed: {faults[-1]['error_type']}: "
                f"{faults[-1]['message']}"
                if faults
                else ""
            )
            return f"agent {handoff['to']} (handoff {handoff['handoffId']}) since {since}{failed}"
        return f"an agent since {since}"

    @property
    def settled(self) -> bool:
        """Nothing more happens without outside input: closed, or waiting for a human."""
        return self.status in CLOSED or self.status in ("escalated", "waiting")


def project(workflow_id: str, events: Iterable[EventEnvelope]) -> WorkflowView:
    view = WorkflowView(workflow_id)
    for event in events:
        view.apply(event)
    return view
