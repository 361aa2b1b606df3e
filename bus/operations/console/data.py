"""What the console shows, read from the deployment's ledger and read models.

The list pages come from the ``cc_console_workflows`` projection (indexed, paged),
never from a fold of the ledger; one workflow's page folds that workflow's own
history, which is what ``claimcheck trace`` and ``claimcheck replay`` read too.
"""

from __future__ import annotations

import threading
from typing import Any

from bus.ledger import Ledger
from bus.ledger.replay import ReplayError, replay, summary
from bus.ledger.verification import first_break
from bus.ledger.view_runner import ViewRunner, open_views
from bus.settings import Settings
from handoff_schemas import EventEnvelope
from projections.console_views import agents, workflow_page
from projections.ledger_views import open_escalations
from projections.trace import DESCRIBE, trace_ids
from projections.views import ViewStore

KIND_BY_EVENT = {
    "ReasoningRecorded": "believed",
    "ActionRequested": "asked",
    "PermissionDecided": "decided",
    "FailureClassified": "decided",
    "RetryDecided": "decided",
    "ToolExecuted": "executed",
    "EvidenceRecorded": "evidence",
    "ClaimMade": "claim",
    "HandoffSent": "handoff",
    "HandoffRejected": "handoff",
    "WorkflowResumed": "handoff",
    "HandoffDeadLettered": "handoff",
    "EscalationRaised": "escalation",
    "EscalationResolved": "escalation",
}


class NoWorkflow(LookupError):
    """The ledger has no workflow with that id."""


class ConsoleData:
    """The ledger and the read models of one deployment, opened once for the console."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if settings.ledger_url().startswith("sqlite"):  # a console may start before the stack
            settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger.from_url(settings.ledger_url())
        self.views: ViewStore = open_views(settings)
        self._runner = ViewRunner(self.ledger, self.views)
        self._catching_up = threading.Lock()

    def close(self) -> None:
        self.ledger.close()

    def catch_up(self) -> None:
        """Apply new events to the read models: the runtime does too, this covers a stack that
        is down (or behind) so the console never shows less than the ledger holds."""
        with self._catching_up:
            self._runner.catch_up()

    def workflows(self, **filters: Any) -> dict[str, Any]:
        self.catch_up()
        rows, total = workflow_page(self.views, **filters)
        return {"workflows": rows, "total": total, "agents": agents(self.views)}

    def escalations(self, limit: int = 200) -> list[dict[str, Any]]:
        """The open escalations (oldest first), each with the action it holds back, which is
        recorded in its workflow's history, not in the view."""
        self.catch_up()
        found = []
        for row in open_escalations(self.views)[:limit]:
            recorded = next(
                (
                    e.data["escalation"]
                    for e in self.history(row["workflow_id"])
                    if e.type == "EscalationRaised"
                    and e.data["escalation"]["escalationId"] == row["escalation_id"]
                ),
                {},
            )
            found.append(
                {**row, "action": recorded.get("action"), "stepKey": recorded.get("stepKey")}
            )
        return found

    def history(self, workflow_id: str) -> list[EventEnvelope]:
        try:
            history = self.ledger.history(workflow_id)
        except Exception as error:  # a malformed id, or none recorded
            raise NoWorkflow(workflow_id) from error
        if not history:
            raise NoWorkflow(workflow_id)
        return history

    def workflow(self, workflow_id: str) -> dict[str, Any]:
        return describe_workflow(self.history(workflow_id))

    def replay(self, workflow_id: str, until: int | None) -> dict[str, Any]:
        history = self.history(workflow_id)
        if until is not None and not 1 <= until <= len(history):
            raise ValueError(
                f"until {until} is outside this workflow's events (1 to {len(history)})"
            )
        try:
            return {"until": until or len(history), "state": summary(replay(history, until))}
        except ReplayError as error:
            raise ValueError(str(error)) from None


def agent_of(event: EventEnvelope) -> str:
    data = event.data
    for nested in ("claim", "escalation"):
        if isinstance(data.get(nested), dict) and data[nested].get("agent"):
            return str(data[nested]["agent"])
    if "handoff" in data:
        return str(data["handoff"].get("from", ""))
    if "evidence" in data:
        return str(data["evidence"].get("actor", ""))
    return str(data.get("agent", ""))


def describe_workflow(history: list[EventEnvelope]) -> dict[str, Any]:
    """The timeline, the hash chain's state, claims, escalations and handoffs of one workflow."""
    started = history[0].data
    broken = first_break(history, None)
    try:
        state: dict[str, Any] | None = summary(replay(history))
        replay_error = None
    except ReplayError as error:
        state, replay_error = None, str(error)
    events: list[dict[str, Any]] = []
    chain_position = 0
    escalations: dict[str, dict[str, Any]] = {}
    for event in history:
        if event.type == "StepCompleted":
            continue
        data = event.data
        row: dict[str, Any] = {
            "version": event.version,
            "at": event.timestamp.isoformat(),
            "type": event.type,
            "kind": KIND_BY_EVENT.get(event.type, "workflow"),
            "agent": agent_of(event),
            "step": data.get("step_key", ""),
            "text": DESCRIBE[event.type](data) if event.type in DESCRIBE else event.type,
            "data": data,
        }
        if event.type == "EvidenceRecorded":
            chain_position += 1
            row["chain_position"] = chain_position
        elif event.type == "EscalationRaised":
            escalations[data["escalation"]["escalationId"]] = {
                **data["escalation"],
                "resolution": None,
            }
        elif event.type == "EscalationResolved":
            resolution = data["resolution"]
            if resolution["escalationId"] in escalations:
                escalations[resolution["escalationId"]]["resolution"] = resolution
        events.append(row)
    return {
        "workflowId": history[0].workflow_id,
        "task": started["task"],
        "scope": started.get("scope", ""),
        "startedBy": started.get("started_by", ""),
        "startedAt": history[0].timestamp.isoformat(),
        "budgetUsd": started.get("budget_usd"),
        "eventCount": len(history),
        "traceIds": trace_ids(history),
        "state": state,
        "replayError": replay_error,
        "chain": {
            "intact": broken is None,
            "firstBreak": str(broken) if broken else None,
            "records": chain_position,
        },
        "events": events,
        "claims": [e["data"]["claim"] for e in events if e["type"] == "ClaimMade"],
        "externalChecks": {  # what the tools' own systems said (verify --external), latest
            e["data"]["check"]["evidenceId"]: e["data"]["check"]
            for e in events
            if e["type"] == "EvidenceChecked"
        },
        "evidence": [
            {**e["data"]["evidence"], "chainPosition": e["chain_position"]}
            for e in events
            if e["type"] == "EvidenceRecorded"
        ],
        "handoffs": [e["data"]["handoff"] for e in events if e["type"] == "HandoffSent"],
        "escalations": list(escalations.values()),
    }
