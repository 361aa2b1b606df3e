"""The ``Workflow`` aggregate's events for what operators do from outside and what agents report
of their own failures: faults, cancel and terminate, retry, signals, and a reset's two ends.

The invariants enforced here, each by the method named:

- a fault is recorded per handoff and delivery, with its message and bounded trace, and
  the last one is what a dead letter names (``report_fault``, ``last_fault``);
- a cancelled or terminated workflow takes no more actions: it is closed
  (``stop_by_operator``; ``Workflow.require_open`` refuses with the matching code);
- a retry runs only the failed steps of a handling again; the ones that succeeded keep
  their recorded replies, so no side effect happens twice (``retry_handling``);
- a signal is read once per wait, in the order signals arrived, and the read is the wait
  step's recorded reply (``unread_signal``); a waiting handling is delivered again when its
  signal comes (``receive_signal``);
- a reset branch starts from the state the old workflow had at the chosen event, linked
  both ways; the old one is closed as ``reset`` and keeps its history (``start_branch``,
  ``mark_reset``; :meth:`bus.ledger.store.Ledger.branch` saves both in one commit).

Every operator event records who (``by``, as the operator named themself), the role that
asked (``role``, from the connection) and why (``reason``).

A base of :class:`~bus.ledger.workflow.Workflow` (an eventsourcing aggregate, so that its
``@event`` methods are events); its state is set up by ``Workflow.__init__``, and what it
adds lives in ``__dict__`` with a default, so snapshots taken before it existed still load.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import Aggregate, event

from bus.ledger.completion import handling_of, parents
from bus.ledger.step_replies import step_outcome

CARRIED = (
    "steps",
    "checkpoints",
    "permissions",
    "evidence",
    "claims",
    "failures",
    "cost_usd",
    "model_call_costs",
    "traceparents",
    "step_owners",
    "handoff_parents",
)
"""What a reset branch carries over from the old workflow's state at the reset point."""


class Controls(Aggregate):
    """Faults agents report, and what operators do to a workflow from outside it."""

    if TYPE_CHECKING:  # set by Workflow.__init__ (class annotations would make a dataclass)
        status: str
        steps: dict[str, Any]
        handoffs: dict[str, dict[str, Any]]
        traceparents: dict[str, str]
        failures: list[dict[str, str]]

        def resume(
            self, handoff: dict[str, Any], escalation_id: str, traceparent: str = ""
        ) -> None: ...

    # -- faults ---------------------------------------------------------------

    def faults(self) -> dict[str, dict[str, Any]]:
        """Handoff id -> the latest fault an agent reported handling it."""
        return self.__dict__.setdefault("last_faults", {})

    @event("FaultReported")
    def report_fault(
        self,
        agent: str,
        kind: str,
        handoff_id: str,
        error_type: str,
        message: str,
        trace: str,
        delivery: int,
        step_key: str,
    ) -> None:
        self.faults()[handoff_id] = {
            "kind": kind,
            "errorType": error_type,
            "message": message,
            "delivery": delivery,
        }

    def last_fault(self, handoff_id: str) -> str:
        """The latest fault of a handling as one phrase, or ``""``."""
        fault = self.faults().get(handoff_id)
        if fault is None:
            return ""
        return f"{fault['kind'].replace('_', ' ')}: {fault['errorType']}: {fault['message']}"

    # -- cancel, terminate ------------------------------------------------------

    def stop_by_operator(self, how: str, by: str, role: str, reason: str) -> None:
        """``how`` is ``cancel`` or ``terminate``; the caller checked the workflow is open."""
        if how == "cancel":
            self._cancelled(by, role, reason)
        else:
            self._terminated(by, role, reason)

    @event("WorkflowCancelled")
    def _cancelled(self, by: str, role: str, reason: str) -> None:
        self.status = "cancelled"
        self.__dict__["stopped_by"] = {"by": by, "reason": reason}

    @event("WorkflowTerminated")
    def _terminated(self, by: str, role: str, reason: str) -> None:
        self.status = "terminated"
        self.__dict__["stopped_by"] = {"by": by, "reason": reason}

    def stop_note(self) -> str:
        """Who cancelled or terminated the workflow, and why (for the refusal agents get)."""
        stopped = self.__dict__.get("stopped_by")
        return f" by {stopped['by']}: {stopped['reason']}" if stopped else ""

    # -- retry ------------------------------------------------------------------

    def failed_handling(self) -> str:
        """The handling a failed workflow failed in: the last dead letter's, else the last
        fault's, else the latest handoff's."""
        letters = self.__dict__.get("dead_letters") or []
        if letters:
            return str(letters[-1])
        if self.faults():
            return next(reversed(self.faults()))
        return next(reversed(self.handoffs), "")

    def retry_handling(self, handoff_id: str, by: str, role: str, reason: str) -> list[str]:
        """Run a handling of a failed workflow again; return the failed steps forgotten."""
        failed = sorted(
            key
            for key in self.steps
            if handling_of(key) == handoff_id and step_outcome(self, key) == "failed"
        )
        self._retried(handoff_id, failed, by, role, reason)
        self.resume(
            self.handoffs[handoff_id],
            f"retry-{self.version}",
            self.traceparents.get(handoff_id, ""),
        )
        return failed

    @event("WorkflowRetried")
    def _retried(
        self, handoff_id: str, cleared_steps: list[str], by: str, role: str, reason: str
    ) -> None:
        """Failed steps are forgotten, and so are the failures the failure table counted in
        this handling (a deadline passed stays passed)."""
        self.forget_steps(cleared_steps)
        self.failures[:] = [
            f
            for f in self.failures
            if f["kind"] == "deadline_exceeded" or handling_of(f["step_key"]) != handoff_id
        ]
        self.status = "running"

    # -- signals ------------------------------------------------------------------

    def signals(self) -> dict[str, list[dict[str, Any]]]:
        return self.__dict__.setdefault("received_signals", {})

    def awaiting(self) -> dict[str, str]:
        """Signal name -> the handling that waits for it."""
        return self.__dict__.setdefault("awaited_signals", {})

    def unread_signal(self, name: str) -> dict[str, Any] | None:
        """The next signal ``name`` no wait step has read, in the order they arrived."""
        read = sum(1 for key in self.steps if step_outcome(self, key) == f"signal:{name}")
        received = self.signals().get(name, [])
        return received[read] if read < len(received) else None

    def receive_signal(
        self, name: str, data: dict[str, Any], by: str, role: str, reason: str, signal_id: str
    ) -> str:
        """Record a signal; a handling that waits for it is delivered again. Returns the
        handoff delivered, or ``""``."""
        waiting = self.awaiting().get(name, "")
        self._signal_received(name, data, by, role, reason, signal_id, waiting)
        if waiting:
            self.resume(self.handoffs[waiting], signal_id, self.traceparents.get(waiting, ""))
        return waiting

    @event("SignalReceived")
    def _signal_received(
        self,
        name: str,
        data: dict[str, Any],
        by: str,
        role: str,
        reason: str,
        signal_id: str,
        woke: str,
    ) -> None:
        self.signals().setdefault(name, []).append({"signalId": signal_id, "data": data})
        if woke:
            self.awaiting().pop(name, None)
            if self.status == "waiting":
                self.status = "running"

    def await_signal(self, agent: str, name: str, step_key: str) -> None:
        """A handling waits for signal ``name`` (recorded once, however often it asks)."""
        if self.awaiting().get(name) != handling_of(step_key):
            self._signal_awaited(agent, name, step_key)

    @event("SignalAwaited")
    def _signal_awaited(self, agent: str, name: str, step_key: str) -> None:
        self.awaiting()[name] = handling_of(step_key)
        self.status = "waiting"

    # -- reset ------------------------------------------------------------------

    def carried_state(self, new_id: str) -> dict[str, Any]:
        """What a branch carries over from this state: steps and their owners, checkpoints,
        permissions, evidence, claims, failures, cost, and the handoffs (now the branch's)."""
        state = {name: self.__dict__.get(name, {}) for name in CARRIED}
        state["handoffs"] = {
            hid: {**handoff, "workflowId": new_id} for hid, handoff in self.handoffs.items()
        }
        return state

    @event("BranchStarted")
    def start_branch(
        self, source: str, version: int, by: str, role: str, reason: str, state: dict[str, Any]
    ) -> None:
        """This workflow continues ``source`` from its event ``version``, with its state then.

        The evidence chain starts again here (each workflow's chain is its own); the records
        carried over stay checkable in the source's chain, and claims here may cite them.
        """
        for name, value in copy.deepcopy(state).items():  # the event keeps what it recorded
            self.__dict__[name] = value
        self.__dict__["branch_of"] = {"workflowId": source, "version": version}
        parents(self)  # type: ignore[arg-type]  # a branch of a workflow from before parents

    @property
    def reset_from(self) -> dict[str, Any]:
        return self.__dict__.get("branch_of") or {}

    @event("WorkflowReset")
    def mark_reset(self, branch: str, version: int, by: str, role: str, reason: str) -> None:
        """This workflow continues as ``branch`` from its event ``version``; it is closed."""
        self.status = "reset"
        self.__dict__["branched_to"] = branch

    @property
    def reset_to(self) -> str:
        return str(self.__dict__.get("branched_to", ""))
