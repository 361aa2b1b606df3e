"""Subject names and stream names, in one place.

The prefix (``cc`` by default) lets several deployments share one NATS cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

OPERATOR = "cli"
"""The identity of people and scripts outside the agents: submit, escalations."""


@dataclass(frozen=True)
class Subjects:
    prefix: str = "cc"

    def runtime(self, agent: str, op: str) -> str:
        """Agent -> runtime request; ``agent`` is the caller's identity."""
        return f"{self.prefix}.rt.{agent}.{op}"

    @property
    def runtime_all(self) -> str:
        return f"{self.prefix}.rt.*.*"

    def inbox(self, agent: str) -> str:
        return f"{self.prefix}.handoff.{agent}"

    def tool(self, tool: str) -> str:
        return f"{self.prefix}.tool.{tool}"

    def tool_confirm(self, tool: str) -> str:
        """Where the runtime asks a tool's host whether a recorded side effect exists."""
        return f"{self.tool(tool)}.confirm"

    def event(self, workflow_id: str, event_type: str) -> str:
        return f"{self.prefix}.events.{workflow_id}.{event_type}"

    def evidence(self, workflow_id: str) -> str:
        return f"{self.prefix}.evidence.{workflow_id}"

    def escalation(self, workflow_id: str) -> str:
        return f"{self.prefix}.escalation.{workflow_id}"

    def audit(self, feed: str) -> str:
        """Where the auditor's read-only feeds are delivered (``evidence``, ``claims``)."""
        return f"{self.prefix}.audit.{feed}"

    def security(self, agent: str) -> str:
        """The runtime's security log entries about requests from ``agent``."""
        return f"{self.prefix}.security.{agent}"

    def dead_letter(self, agent: str) -> str:
        return f"{self.prefix}.deadletter.{agent}"

    def max_deliveries_advisory(self) -> str:
        """JetStream's advisory when an inbox message ran out of deliveries."""
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream('handoff')}.*"

    def kind_of(self, subject: str) -> str:
        """The kind of a subject of ours (``events``, ``handoff``...): its stream's."""
        return subject.removeprefix(f"{self.prefix}.").split(".", 1)[0]

    def stream(self, kind: str) -> str:
        """Stream name for ``events``, ``evidence``, ``handoff`` or ``escalation``."""
        return f"{self.prefix}_{kind}".upper().replace("-", "_")

    @property
    def artifact_bucket(self) -> str:
        return f"{self.prefix}-artifacts"

    @property
    def journal_bucket(self) -> str:
        """The key-value bucket every tool host shares as its idempotency journal."""
        return f"{self.prefix}-tool-journal"

    @property
    def lease_bucket(self) -> str:
        """The key-value bucket of leases: which replica does a job only one should do."""
        return f"{self.prefix}-leases"

    @property
    def registry_bucket(self) -> str:
        """The key-value bucket where tool hosts describe the tools they serve, by name."""
        return f"{self.prefix}-tool-registry"
