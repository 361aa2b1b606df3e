"""Open escalations, folded from the escalation stream (or the ledger's events).

An escalation is open from its ``EscalationRaised`` event until an
``EscalationResolved`` event names it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from handoff_schemas import EventEnvelope


@dataclass
class EscalationsView:
    raised: dict[str, dict[str, Any]] = field(default_factory=dict)
    resolved: dict[str, dict[str, Any]] = field(default_factory=dict)

    def apply(self, event: EventEnvelope) -> None:
        if event.type == "EscalationRaised":
            escalation = event.data["escalation"]
            self.raised[escalation["escalationId"]] = escalation
        elif event.type == "EscalationResolved":
            resolution = event.data["resolution"]
            self.resolved[resolution["escalationId"]] = resolution

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
