"""The ``Workflow`` aggregate's events for passing work on and claiming it done: handoffs,
the gate they pass, claims judged against the evidence, and completion.

The invariants enforced here, each by the method named:

- a ``completed`` or ``verified`` handoff rests on a verified claim of its sender's, and
  one that does not is refused and the refusal recorded (``send_handoff``);
- a claim is judged item by item against the evidence, and recorded with its verdict
  whatever it is (``make_claim``);
- a workflow is done only when every handling in it is closed by the evidence
  (``open_handlings``; the rules are in :mod:`bus.ledger.completion`).

Kept here because the runtime reads them: each handoff's ``traceparent`` (joining the next
agent to the trace) and the handling it was sent from (``handoff_parents``, in the
aggregate's ``__dict__`` with a default so older snapshots load).

A base of :class:`~bus.ledger.workflow.Workflow` (an eventsourcing aggregate, so that its
``@event`` methods are events); its state is set up by ``Workflow.__init__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import uuid4

import msgspec
from eventsourcing.domain import Aggregate, event

from bus.ledger.completion import (
    Done,
    gate_problem,
    handling_of,
    judged_claim,
    open_handlings,
    parents,
)
from bus.ledger.errors import InvalidHandoff
from handoff_schemas import DONE_STATUSES, Claim, ClaimAssertion


class Handoffs(Aggregate):
    """Who was handed what, what they claimed of it, and whether that closes the workflow."""

    if TYPE_CHECKING:  # set by Workflow.__init__ (class annotations would make a dataclass)
        status: str
        handoffs: dict[str, dict[str, Any]]
        traceparents: dict[str, str]
        claims: dict[str, dict[str, Any]]

    def send_handoff(
        self, handoff: dict[str, Any], traceparent: str = "", step_key: str = ""
    ) -> None:
        """Hand work on; one whose status says work was done must rest on a verified claim.

        A ``completed`` or ``verified`` handoff names (``claimId``) a verified claim of this
        workflow made by its sender; the runtime makes that claim from the handoff's items
        (:mod:`bus.runtime.workflows`). ``step_key`` names the handling it is sent from.
        """
        if handoff["status"] in DONE_STATUSES:
            reason = gate_problem(self, handoff)  # type: ignore[arg-type]
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
        parents(self)[handoff["handoffId"]] = parent  # type: ignore[arg-type]

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
        claim = judged_claim(
            self,  # type: ignore[arg-type]
            agent,
            assertion,
            step_key,
            done or {},
            f"claim-{uuid4().hex}",
        )
        self._claim_made(summary, msgspec.to_builtins(claim))
        return claim

    @event("ClaimMade")
    def _claim_made(self, summary: str, claim: dict[str, Any]) -> None:
        self.claims[claim["claimId"]] = claim

    def open_handlings(self, done: Done | None = None) -> list[str]:
        """Handlings not closed yet (:mod:`bus.ledger.completion`)."""
        return open_handlings(self, done or {})  # type: ignore[arg-type]

    @event("WorkflowCompleted")
    def complete(self, agent: str, claim_id: str) -> None:
        self.status = "completed"
