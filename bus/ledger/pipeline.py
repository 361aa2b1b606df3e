"""The ``Workflow`` aggregate's events for one step of an agent's pipeline: intent, context,
reasoning, the permission decision, the tool run, its evidence, and the step's recorded reply.

The invariants enforced here, each by the method named:

- a tool execution needs an allowing permission decision for the same step
  (``execute_tool``);
- evidence is hash-chained within its workflow, in the order it was recorded
  (``add_evidence``);
- cost never passes the budget unnoticed: a model call that takes the total past it
  stops the workflow (``record_reasoning``);
- a step that completed is never executed again: its recorded reply is kept
  (``complete_step``; the runtime replays it).

Kept here rather than bookkeeping elsewhere, because the runtime decides from them: the
cost so far and each model call's cost (affordability, :mod:`bus.runtime.governance`), the
model's unavailability windows per handling (:mod:`bus.runtime.availability`), and the
checkpoints an agent declared (shown beside the evidence that backs them).

A base of :class:`~bus.ledger.workflow.Workflow` (an eventsourcing aggregate, so that its
``@event`` methods are events); its state is set up by ``Workflow.__init__``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import msgspec
from eventsourcing.domain import Aggregate, event

from bus.ledger.errors import LedgerError
from handoff_schemas import Evidence, evidence_hash

GENESIS_HASH = "0" * 64


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


class Pipeline(Aggregate):
    """What one agent's steps asked, believed, were allowed, did and declared."""

    if TYPE_CHECKING:  # set by Workflow.__init__ (class annotations would make a dataclass)
        status: str
        budget_usd: float
        cost_usd: float
        model_call_costs: list[float]
        steps: dict[str, Any]
        checkpoints: dict[str, Any]
        permissions: dict[str, dict[str, str]]
        evidence: dict[str, dict[str, Any]]
        last_evidence_hash: str
        model_windows: dict[str, str]

        def _step_owners(self) -> dict[str, str]: ...

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

    @event("BudgetExceeded")
    def exceed_budget(self, reason: str) -> None:
        self.status = "stopped"

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

    def step_order(self) -> dict[str, Any]:
        """Every step key in the order it was first recorded: ``state``'s cursor is an offset
        into it, which nothing may shift, or paging would skip a step.

        That is the steps themselves until a retry forgets some (:meth:`forget_steps`);
        from then on a copy of the order keeps their places. Only a retried workflow's
        snapshots carry the copy.
        """
        return self.__dict__.get("first_recorded") or self.steps

    def forget_steps(self, keys: list[str]) -> None:
        """Forget recorded steps (they run again), keeping their places in the order."""
        self.__dict__.setdefault("first_recorded", dict.fromkeys(self.steps))
        for key in keys:
            self.steps.pop(key, None)

    @event("StepCompleted")
    def complete_step(
        self, step_key: str, op: str, result: Any, trace_id: str = "", agent: str = ""
    ) -> None:
        """The durable-execution marker: ``result`` is the reply a retry gets back.

        The aggregate keeps this event's version, not the reply: the reply stays in the
        event, read back when the step is asked again (:mod:`bus.ledger.step_replies`), so
        that snapshots do not carry every reply ever recorded. What decisions read of a
        reply is kept beside (``step_outcomes``): that it failed, or read which signal.
        A step completed again (a human approved what was refused) keeps the later reply.
        ``agent`` owns the step (empty in histories recorded before owners were).
        """
        if "first_recorded" in self.__dict__:
            self.__dict__["first_recorded"].setdefault(step_key)
        self.steps[step_key] = self.version + 1  # this event's version (applied before it)
        outcome = self.__dict__.setdefault("step_outcomes", {})
        outcome.pop(step_key, None)
        if isinstance(result, dict) and not result.get("ok", True):
            outcome[step_key] = "failed"
        elif isinstance(result, dict) and isinstance(result.get("result"), dict):
            if result["result"].get("signalId"):  # a wait step that read a signal
                outcome[step_key] = f"signal:{result['result'].get('name')}"
        if agent:
            self._step_owners()[step_key] = agent
