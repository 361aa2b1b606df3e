"""The ``Workflow`` aggregate's events for what auditors found after the fact: the relay's
quarantines and what the tools' own systems said of the recorded side effects.

The invariants enforced here, each by the method named:

- an event the relay could not publish is recorded once per position
  (``quarantine_event``); the event itself stays in the ledger;
- evidence is never changed by an audit: what a tool's system said of it is recorded
  beside it, the latest answer per evidence record (``record_external_check``), and a
  closed workflow may still be audited.

A base of :class:`~bus.ledger.workflow.Workflow` (an eventsourcing aggregate, so that its
``@event`` methods are events); what it keeps lives in the aggregate's ``__dict__`` with a
default, so snapshots taken before it existed still load.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import Aggregate, event


class Audits(Aggregate):
    """Findings about a workflow's record that come from outside its agents' steps."""

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

    def _quarantined(self) -> list[int]:
        """Positions of this workflow's events the relay could not publish."""
        return self.__dict__.setdefault("quarantined_positions", [])

    @event("EvidenceChecked")
    def record_external_check(self, check: dict[str, Any]) -> None:
        """What a tool's own system said of one evidence record (an
        :class:`~handoff_schemas.ExternalCheck`: confirmed, contradicted or unconfirmable)."""
        self.external_checks()[check["evidenceId"]] = check

    def external_checks(self) -> dict[str, dict[str, Any]]:
        """Evidence id -> the latest external check of it."""
        return self.__dict__.setdefault("external_check_results", {})
