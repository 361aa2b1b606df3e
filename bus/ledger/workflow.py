"""The ``Workflow`` aggregate: one workflow's history, and the invariants that hold whatever
a model or an agent says.

Every claim and every execution is an event on the aggregate, in the order of the
mission's pipeline. The invariants, each enforced by the method named:

- a closed workflow (completed, failed or stopped) takes no more actions, and one that
  waits for a human takes none until the human answers (``require_open``);
- only an agent the workflow was handed to may act in it (``require_participant``), and
  a step key is its agent's alone (``require_step_owner``; both in
  :mod:`bus.ledger.participation`);
- a step that completed is never executed again: its recorded reply is kept
  (``complete_step``; the runtime replays it);
- a tool execution needs an allowing permission decision for the same step
  (``execute_tool``);
- evidence is hash-chained within its workflow, in the order it was recorded
  (``add_evidence``);
- a ``completed`` or ``verified`` handoff rests on a verified claim of its sender's
  (``send_handoff``); a claim is judged item by item against the evidence (``make_claim``);
- cost never passes the budget unnoticed: a model call that takes the total past it
  stops the workflow (``record_reasoning``);
- an escalation is answered once (``resolve_escalation``).

What is counted from this state to decide (rule uses, failure attempts, affordability)
is the runtime's, in :mod:`bus.runtime.governance`; views of it are in ``projections``.

Events evolve by adding fields with a default on the aggregate's method, so that
histories recorded before still apply (``tests/ledger/fixtures`` holds some, and
:mod:`bus.ledger.replay` checks them).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4, uuid5

import msgspec
from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import register_topic

from bus.ledger.completion import (
    Done,
    gate_problem,
    handling_of,
    judged_claim,
    open_handlings,
    parents,
)
from bus.ledger.errors import (
    InvalidHandoff,
    LedgerError,
    UnknownEscalation,
    WorkflowClosed,
    WorkflowEscalated,
)
from bus.ledger.participation import Participation
from handoff_schemas import (
    DONE_STATUSES,
    Claim,
    ClaimAssertion,
    Escalation,
    EscalationResolution,
    Evidence,
    PendingAction,
    evidence_hash,
)

GENESIS_HASH = "0" * 64
CLOSED_STATUSES = frozenset({"completed", "failed", "stopped"})
LEGACY_TOPIC = "bus.ledger:Workflow"
REQUEST_NAMESPACE = UUID("6f1c7a52-5d0e-4c4b-9a57-0c1a1ec1a1ec")
"""Workflow ids from clients' request ids (``uuid5``): one id per request id, everywhere."""
"""Where the aggregate lived before ``bus/`` had subpackages: ledgers written then name it."""


def chained_evidence(workflow_id: str, prev_hash: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A new evidence record linked to ``prev_hash``, with its own hash over the wire encoding."""
    draft = Evidence(
        audit_id=f"ev-{uuid4().hex}",
        workflow_id=workflow_id,
        timestamp=datetime.now(UTC),
        prev_hash=prev_hash,
        hash="",
        **fields,
    )
    record = msgspec.to_builtins(draft)
    record["hash"] = evidence_hash(record)
    return record


class Workflow(Aggregate, Participation):
    """One workflow's history: what was asked, believed, allowed, done and claimed."""

    @staticmethod
    def create_id(request_id: str = "") -> UUID:
        """The id of a workflow a client started with a request id is derived from it, so
        a start asked again (after a timeout, a leader election) finds the same workflow."""
        return uuid5(REQUEST_NAMESPACE, request_id) if request_id else uuid4()

    @event("WorkflowStarted")
    def __init__(
        self,
        task: str,
        agent: str,
        artifact_id: str,
        scope: str,
        started_by: str,
        budget_usd: float,
        trace_id: str = "",
        request_id: str = "",
    ):
        self.request_id = request_id
        self.task = task
        self.agent = agent
        self.artifact_id = artifact_id
        self.scope = scope
        self.started_by = started_by
        self.budget_usd = budget_usd
        self.trace_id = trace_id
        self.traceparents: dict[str, str] = {}
        self.cost_usd = 0.0
        self.model_call_costs: list[float] = []
        self.status = "running"
        self.steps: dict[str, Any] = {}
        self.checkpoints: dict[str, Any] = {}
        self.permissions: dict[str, dict[str, str]] = {}
        self.evidence: dict[str, dict[str, Any]] = {}
        self.last_evidence_hash = GENESIS_HASH
        self.handoffs: dict[str, dict[str, Any]] = {}
        self.claims: dict[str, dict[str, Any]] = {}
        self.failures: list[dict[str, str]] = []
        self.model_windows: dict[str, str] = {}
        """Per handling (``<handoffId>``) with the model unavailable: when its window ends."""
        self.escalations: dict[str, dict[str, Any]] = {}

    # -- guards ---------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.status in CLOSED_STATUSES

    def require_open(self) -> None:
        """Agents act only in a running workflow: not a closed one, nor one a human holds."""
        if self.closed:
            raise WorkflowClosed(f"workflow {self.id} is {self.status}")
        if self.status == "escalated":
            raise WorkflowEscalated(
                f"workflow {self.id} waits for a human: {self.open_escalations()}"
            )

    def open_escalations(self) -> list[str]:
        return [eid for eid, esc in self.escalations.items() if "decision" not in esc]

    # -- the pipeline ---------------------------------------------------------

    @event("IntentResolved")
    def resolve_intent(self, agent: str, handoff_id: str, task: str, step_key: str) -> None:
        pass

    @event("ContextAssembled")
    def assemble_context(self, agent: str, artifacts: list[dict[str, Any]], step_key: str) -> None:
        pass

    def record_reasoning(
        self,
        agent: str,
        purpose: str,
        model: str,
        output: dict[str, Any],
        usage: dict[str, int],
        cost_usd: float,
        step_key: str,
    ) -> None:
        """Record what the model believed and what it cost.

        A cost that takes the workflow past its budget stops it.
        """
        self._reasoning_recorded(agent, purpose, model, output, usage, cost_usd, step_key)
        if self.cost_usd > self.budget_usd:
            self.exceed_budget(
                f"spent {self.cost_usd:.6f} USD of a {self.budget_usd:.6f} USD budget"
            )

    @event("ReasoningRecorded")
    def _reasoning_recorded(
        self,
        agent: str,
        purpose: str,
        model: str,
        output: dict[str, Any],
        usage: dict[str, int],
        cost_usd: float,
        step_key: str,
    ) -> None:
        self.cost_usd += cost_usd
        self.model_call_costs.append(cost_usd)
        self.model_windows.pop(step_key.rpartition("/")[0], None)  # the model answered again

    @event("ActionRequested")
    def request_action(
        self, agent: str, action: str, resource: str, payload: dict[str, Any], step_key: str
    ) -> None:
        pass

    @event("PermissionDecided")
    def decide_permission(
        self,
        agent: str,
        action: str,
        resource: str,
        permission: str,
        rule: str,
        reason: str,
        step_key: str,
    ) -> None:
        self.permissions[step_key] = {
            "permission": permission,
            "action": action,
            "rule": rule,
            "agent": agent,
        }

    def execute_tool(
        self,
        agent: str,
        tool: str,
        status: str,
        duration_ms: float,
        attempt: int,
        cost_usd: float,
        step_key: str,
    ) -> None:
        """Record a tool run: only what was allowed (or approved) for this step may run."""
        decision = self.permissions.get(step_key)
        if decision is None or decision["permission"] not in ("allowed", "approved"):
            raise LedgerError(f"no allowing permission decision for step {step_key}")
        self._tool_executed(agent, tool, status, duration_ms, attempt, cost_usd, step_key)

    @event("ToolExecuted")
    def _tool_executed(
        self,
        agent: str,
        tool: str,
        status: str,
        duration_ms: float,
        attempt: int,
        cost_usd: float,
        step_key: str,
    ) -> None:
        self.cost_usd += cost_usd

    @event("ToolUnavailable")
    def note_tool_unavailable(
        self,
        agent: str,
        tool: str,
        kind: str,
        detail: str,
        attempt: int,
        retry_in_seconds: float,
        window_ends_at: str,
        step_key: str,
    ) -> None:
        """No tool host answered this attempt; the runtime waits it out until ``window_ends_at``.

        Not a failure: a host restarting is a pause (failures are what the failure table counts).
        """

    @event("ModelUnavailable")
    def note_model_unavailable(
        self,
        agent: str,
        detail: str,
        attempt: int,
        retry_after_seconds: float | None,
        retry_in_seconds: float,
        window_ends_at: str,
        step_key: str,
    ) -> None:
        """A model attempt found it overloaded, rate limited or unreachable; the agent tries
        again in ``retry_in_seconds`` (never sooner than the provider's ``retry-after``), as
        long as that is before ``window_ends_at``, which the first such attempt set."""
        self.model_windows.setdefault(step_key.rpartition("/")[0], window_ends_at)

    @event("ToolOutcomeUnknown")
    def note_unknown_outcome(self, agent: str, tool: str, detail: str, step_key: str) -> None:
        """A tool host died mid-effect; the call was run again under the tool's own idempotency."""

    def add_evidence(self, sign: Callable[[bytes], str] | None = None, **fields: Any) -> Evidence:
        """Chain a new evidence record to the previous one, sign its hash, and record it."""
        record = chained_evidence(str(self.id), self.last_evidence_hash, fields)
        if sign is not None:
            record["signature"] = sign(record["hash"].encode())
        self._evidence_recorded(record)
        return msgspec.convert(record, Evidence)

    @event("EvidenceRecorded")
    def _evidence_recorded(self, evidence: dict[str, Any]) -> None:
        self.evidence[evidence["auditId"]] = evidence
        self.last_evidence_hash = evidence["hash"]

    @event("CheckpointReached")
    def reach_checkpoint(
        self,
        agent: str,
        name: str,
        data: dict[str, Any],
        step_key: str,
        cited: list[str] | None = None,
        backed_by: list[str] | None = None,
    ) -> None:
        """What the agent declared; ``backed_by`` the cited evidence that really backs it."""
        self.checkpoints[name] = data

    @event("AuditNoted")
    def note_audit(self, agent: str, note: str, data: dict[str, Any], step_key: str) -> None:
        pass

    def send_handoff(
        self, handoff: dict[str, Any], traceparent: str = "", step_key: str = ""
    ) -> None:
        """Hand work on; one whose status says work was done must rest on a verified claim.

        A ``completed`` or ``verified`` handoff names (``claimId``) a verified claim of this
        workflow made by its sender; the runtime makes that claim from the handoff's items
        (:mod:`bus.runtime.workflows`). ``step_key`` names the handling it is sent from.
        """
        if handoff["status"] in DONE_STATUSES:
            reason = gate_problem(self, handoff)
            if reason is not None:
                self.reject_handoff(handoff, reason)
                raise InvalidHandoff(reason)
        self._handoff_sent(handoff, traceparent, handling_of(step_key) if step_key else "")

    @event("HandoffSent")
    def _handoff_sent(
        self, handoff: dict[str, Any], traceparent: str = "", parent: str = ""
    ) -> None:
        """``traceparent`` rides along to the inbox, joining the next agent to the trace;
        ``parent`` is the handling it was sent from ("" for the first)."""
        self.handoffs[handoff["handoffId"]] = handoff
        self.traceparents[handoff["handoffId"]] = traceparent
        parents(self)[handoff["handoffId"]] = parent

    @event("HandoffRejected")
    def reject_handoff(self, handoff: dict[str, Any], reason: str) -> None:
        pass

    def make_claim(
        self,
        agent: str,
        summary: str,
        assertion: ClaimAssertion,
        step_key: str = "",
        done: Done | None = None,
    ) -> Claim:
        """Judge a claim item by item (:mod:`bus.ledger.verdicts`) and record it.

        The claim speaks for the handlings of ``step_key`` (:func:`handlings_for`); its
        tasks' definitions of done (``done``) decide between ``verified`` and ``partial``.
        """
        claim = judged_claim(self, agent, assertion, step_key, done or {}, f"claim-{uuid4().hex}")
        self._claim_made(summary, msgspec.to_builtins(claim))
        return claim

    @event("ClaimMade")
    def _claim_made(self, summary: str, claim: dict[str, Any]) -> None:
        self.claims[claim["claimId"]] = claim

    def open_handlings(self, done: Done | None = None) -> list[str]:
        """Handlings not closed yet (:mod:`bus.ledger.completion`)."""
        return open_handlings(self, done or {})

    # -- failures, retries, escalations -----------------------------------------

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
        self, escalation_id: str, decision: str, approver: str, reason: str
    ) -> dict[str, Any]:
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
        )
        self._escalation_resolved(msgspec.to_builtins(resolution))
        return escalation

    @event("EscalationResolved")
    def _escalation_resolved(self, resolution: dict[str, Any]) -> None:
        escalation = self.escalations[resolution["escalationId"]]
        escalation["decision"] = resolution["decision"]
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
        self.fail(
            f"handoff {handoff['handoffId']} to {handoff['to']} failed {deliveries} deliveries"
        )

    @event("HandoffDeadLettered")
    def _handoff_dead_lettered(self, handoff: dict[str, Any], deliveries: int) -> None:
        pass

    @event("BudgetExceeded")
    def exceed_budget(self, reason: str) -> None:
        self.status = "stopped"

    @event("WorkflowCompleted")
    def complete(self, agent: str, claim_id: str) -> None:
        self.status = "completed"

    @event("WorkflowFailed")
    def fail(self, reason: str) -> None:
        self.status = "failed"

    @event("WorkflowStopped")
    def stop(self, reason: str) -> None:
        self.status = "stopped"

    def quarantine_event(
        self, position: int, quarantined_version: int, event_type: str, reason: str, size: int
    ) -> bool:
        """Record that the relay could not publish this workflow's event at ``position``
        (too large for the server, unreadable); once per position. The event itself stays
        in the ledger; ``verify`` expects no stream copy of it."""
        if position in self._quarantined():
            return False
        self._event_quarantined(position, quarantined_version, event_type, reason, size)
        return True

    @event("EventQuarantined")
    def _event_quarantined(
        self, position: int, quarantined_version: int, event_type: str, reason: str, size: int
    ) -> None:
        self._quarantined().append(position)

    @event("StepCompleted")
    def complete_step(
        self, step_key: str, op: str, result: Any, trace_id: str = "", agent: str = ""
    ) -> None:
        """The durable-execution marker: ``result`` is the reply a retry gets back.

        A step completed again (a human approved what was refused) keeps the later reply.
        ``agent`` owns the step (empty in histories recorded before owners were).
        """
        self.steps[step_key] = result
        if agent:
            self._step_owners()[step_key] = agent


register_topic(LEGACY_TOPIC, Workflow)  # old events and snapshots resolve to today's class
