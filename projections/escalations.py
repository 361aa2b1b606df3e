"""Open escalations, folded from the escalation stream (or the ledger's events).

An escalation is open from its ``EscalationRaised`` event until an
``EscalationResolved`` event names it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from handoff_schemas import Escalation, EscalationResolution, EventEnvelope, SchemaError, convert

log = logging.getLogger(__name__)


@dataclass
class EscalationsView:
    raised: dict[str, dict[str, Any]] = field(default_factory=dict)
    resolved: dict[str, dict[str, Any]] = field(default_factory=dict)

    def apply(self, event: EventEnvelope) -> None:
        """Fold one event; one whose record is malformed is reported and skipped."""
        try:
            if event.type == "EscalationRaised":
                escalation = event.data.get("escalation")
                convert(escalation, Escalation)  # the shape every reader of it relies on
                self.raised[escalation["escalationId"]] = escalation  # type: ignore[index]
            elif event.type == "EscalationResolved":
                resolution = event.data.get("resolution")
                convert(resolution, EscalationResolution)
                self.resolved[resolution["escalationId"]] = resolution  # type: ignore[index]
        except SchemaError as error:
            log.warning("skipped a malformed %s event: %s", event.type, error)

    @property
    def open(self) -> list[dict[str, Any]]:
        return [esc for eid, esc in self.raised.items() if eid not in self.resolved]

    def get(self, escalation_id: str) -> dict[str, Any] | None:
        escalation = self.raised.get(escalation_id)
        if escalation is None:
            return None
        return {**escalation, "resolution": self.resolved.get(escalation_id)}


def fold_escalations(events: Iterable[EventEnvelope]) -> EscalationsView:
    view = EscalationsView()
    for event in events:
        view.apply(event)
    return view
