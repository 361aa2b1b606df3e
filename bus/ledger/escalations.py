"""The ``Workflow`` aggregate's events for what went wrong and what a human decided: failures,
retries, escalations and their answers, resumption, and the dead letter.

The invariants enforced here, each by the method named:

- an escalation is answered once, and only one that was raised (``resolve_escalation``);
- a workflow with an unanswered escalation waits for a human (``open_escalations``, read by
  ``Workflow.require_open``); the last answer lets it run again;
- a human's approval of a refused action is that step's permission (``resolve_escalation``);
- a handoff that failed every delivery is parked and fails its workflow, once, naming the
  last fault its agent reported (``dead_letter``).

Kept here because the runtime decides from it: the failures so far (the failure table
counts them, :mod:`bus.runtime.governance`).

A base of :class:`~bus.ledger.workflow.Workflow` (an eventsourcing aggregate, so that its
``@event`` methods are events); its state is set up by ``Workflow.__init__``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import msgspec
from eventsourcing.domain import Aggregate, event

from bus.ledger.errors import LedgerError, UnknownEscalation
from handoff_schemas import Escalation, EscalationResolution, PendingAction


class Escalations(Aggregate):
    """Failures, the decisions they led to, and the humans asked."""

    if TYPE_CHECKING:  # set by Workflow.__init__ (class annotations would make a dataclass)
        status: str
        closed: bool
        failures: list[dict[str, str]]
        escalations: dict[str, dict[str, Any]]
        permissions: dict[str, dict[str, str]]

        def fail(self, reason: str) -> None: ...

        def last_fault(self, handoff_id: str) -> str: ...

    def open_escalations(self) -> list[str]:
        return [eid for eid, esc in self.escalations.items() if "decision" not in esc]

    @event("FailureClassified")
    def classify_failure(self, agent: str, kind: str, detail: str, step_key: str) -> None:
        self.failures.append({"kind": kind, "step_key": step_key})

    @event("RetryDecided")
    def decide_retry(self, kind: str, decision: dict[str, Any], step_key: str) -> None:
        pass

    def raise_escalation(
        self,
        kind: str,
        reason: str,
        agent: str,
        step_key: str,
        action: dict[str, Any] | None = None,
        claim_id: str | None = None,
    ) -> str:
        escalation = Escalation(
            escalation_id=f"esc-{uuid4().hex}",
            workflow_id=str(self.id),
            kind=kind,
            reason=reason,
            agent=agent,
            step_key=step_key,
            raised_at=datetime.now(UTC),
            action=None if action is None else msgspec.convert(action, PendingAction),
            claim_id=claim_id,
        )
        self._escalation_raised(msgspec.to_builtins(escalation))
        return escalation.escalation_id

    @event("EscalationRaised")
    def _escalation_raised(self, escalation: dict[str, Any]) -> None:
        self.escalations[escalation["escalationId"]] = escalation
        self.status = "escalated"

    def resolve_escalation(
        self,
        escalation_id: str,
        decision: str,
        approver: str,
        reason: str,
        corrected: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record a human's answer; ``corrected`` is the action an approval with changes
        runs instead of the held one (the runtime checked it against the policy)."""
        escalation = self.escalations.get(escalation_id)
        if escalation is None:
            raise UnknownEscalation(f"workflow {self.id} has no escalation {escalation_id!r}")
        if "decision" in escalation:
            raise LedgerError(
                f"escalation {escalation_id} was already resolved: {escalation['decision']}"
            )
        resolution = EscalationResolution(
            escalation_id=escalation_id,
            workflow_id=str(self.id),
            decision=decision,  # type: ignore[arg-type]  # the wire decoded it as approve|deny
            approver=approver,
            reason=reason,
            resolved_at=datetime.now(UTC),
            corrected_action=None
            if corrected is None
            else msgspec.convert(corrected, PendingAction),
        )
        self._escalation_resolved(msgspec.to_builtins(resolution))
        return escalation

    @event("EscalationResolved")
    def _escalation_resolved(self, resolution: dict[str, Any]) -> None:
        escalation = self.escalations[resolution["escalationId"]]
        escalation["decision"] = resolution["decision"]
        escalation["approver"] = resolution["approver"]
        if resolution.get("correctedAction"):
            escalation["corrected"] = resolution["correctedAction"]
        if resolution["decision"] == "approve":
            if escalation["action"] is not None:  # the human's grant is the step's permission
                self.permissions[escalation["stepKey"]] = {
                    "permission": "approved",
                    "action": escalation["action"]["tool"],
                    "rule": f"human:{resolution['approver']}",
                }
            if not self.open_escalations():
                self.status = "running"

    @event("WorkflowResumed")
    def resume(self, handoff: dict[str, Any], escalation_id: str, traceparent: str = "") -> None:
        """Deliver ``handoff`` again, so its agent re-runs and replays the recorded steps."""

    def dead_letter(self, handoff: dict[str, Any], deliveries: int) -> None:
        """An agent failed this handoff on every delivery: park it and fail the workflow."""
        if self.closed:
            return  # already ended (or another replica recorded this first)
        self._handoff_dead_lettered(handoff, deliveries)
        fault = self.last_fault(handoff["handoffId"])
        self.fail(
            f"handoff {handoff['handoffId']} to {handoff['to']} failed {deliveries} deliveries"
            + (f"; the last: {fault}" if fault else "")
        )

    @event("HandoffDeadLettered")
    def _handoff_dead_lettered(self, handoff: dict[str, Any], deliveries: int) -> None:
        self.__dict__.setdefault("dead_letters", []).append(handoff["handoffId"])
