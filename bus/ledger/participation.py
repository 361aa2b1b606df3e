"""Who may act in, read, and own the steps of a workflow: the guards a compromised agent
meets first.

A mixin of :class:`~bus.ledger.workflow.Workflow`, kept apart so that the aggregate
stays about its events. What it reads beyond the handoffs lives in the aggregate's
``__dict__`` with a default, so snapshots taken before it existed still load.
"""

from __future__ import annotations

from typing import Any

from bus.ledger.errors import NotAParticipant


class Participation:
    id: Any
    started_by: str
    handoffs: dict[str, dict[str, Any]]
    evidence: dict[str, dict[str, Any]]

    def require_participant(self, agent: str) -> None:
        """Only an agent this workflow was handed to may act in it."""
        if all(handoff["to"] != agent for handoff in self.handoffs.values()):
            raise NotAParticipant(f"agent {agent!r} was never handed workflow {self.id}")

    def require_reader(self, agent: str) -> None:
        """Reading a workflow's state takes part in it too: a participant, or who started it."""
        if agent != self.started_by:
            self.require_participant(agent)

    def require_artifact_reader(self, agent: str, artifact_id: str) -> None:
        """An artifact is read through a workflow that refers to it, by who may read that
        workflow: its id alone (a digest) opens nothing."""
        self.require_reader(agent)
        if artifact_id not in self.artifact_ids():
            raise NotAParticipant(f"workflow {self.id} has no artifact {artifact_id}")

    def artifact_ids(self) -> set[str]:
        """Every artifact this workflow refers to: handoffs' inputs, tool calls' evidence."""
        found = {handoff["artifactId"] for handoff in self.handoffs.values()}
        for record in self.evidence.values():
            found.update(record.get("artifacts", {}).values())
        return found

    def step_owner(self, step_key: str) -> str | None:
        """The agent a step key belongs to: who recorded it, else who holds the handoff the
        key is numbered under (``<handoffId>/<n>``); None for a key nobody can claim yet."""
        owner = self._step_owners().get(step_key)
        if owner:
            return owner
        handoff = self.handoffs.get(step_key.split("/", 1)[0])
        return None if handoff is None else handoff["to"]

    def require_step_owner(self, agent: str, step_key: str) -> None:
        """A step is its agent's alone: never replayed to another, nor recorded by another
        first (which would hand the victim a forged model output as its own)."""
        owner = self.step_owner(step_key)
        if owner is not None and owner != agent:
            raise NotAParticipant(f"step {step_key!r} belongs to {owner!r}, not to {agent!r}")

    def _step_owners(self) -> dict[str, str]:
        return self.__dict__.setdefault("step_owners", {})

    def _quarantined(self) -> list[int]:
        """Positions of this workflow's events the relay could not publish."""
        return self.__dict__.setdefault("quarantined_positions", [])
