"""The ``Workflow`` aggregate: one workflow's history, and the invariants that hold whatever
a model or an agent says.

Every claim and every execution is an event on the aggregate, in the order of the
mission's pipeline. The aggregate is split by concept, each part listing the invariants
it enforces where it enforces them:

- :mod:`bus.ledger.pipeline`: one step of an agent's pipeline, from intent to evidence
  (a tool runs only when allowed, evidence is hash-chained, the budget stops the
  workflow, a completed step is never executed again);
- :mod:`bus.ledger.handoffs`: handoffs, their gate, claims and completion;
- :mod:`bus.ledger.escalations`: failures, escalations and the dead letter;
- :mod:`bus.ledger.audits`: the relay's quarantines and what the tools' own systems said
  of the recorded side effects (``verify --external``);
- :mod:`bus.ledger.controls`: agents' faults, and operators' cancel, terminate, retry,
  signals and resets;
- :mod:`bus.ledger.participation`: who may act in and read a workflow, and own a step;
- here: a closed workflow (completed, failed, stopped, cancelled, terminated or reset)
  takes no more actions, and one that waits for a human takes none until the human
  answers (``require_open``).

What is counted from this state to decide (rule uses, failure attempts, affordability)
is the runtime's, in :mod:`bus.runtime.governance`; views of it are in ``projections``.

Events evolve by adding fields with a default on the aggregate's method, so that
histories recorded before still apply (``tests/ledger/fixtures`` holds some, and
:mod:`bus.ledger.replay` checks them). Every event is stored under the topic
``bus.ledger.workflow:Workflow.<Event>`` whichever part defines it
(:func:`keep_stored_topics`), so ledgers written before the split load unchanged.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate, DecoratedFuncCaller, event
from eventsourcing.utils import get_topic, register_topic

from bus.ledger.audits import Audits
from bus.ledger.controls import Controls
from bus.ledger.errors import Cancelled, Terminated, WorkflowClosed, WorkflowEscalated
from bus.ledger.escalations import Escalations
from bus.ledger.handoffs import Handoffs
from bus.ledger.participation import Participation
from bus.ledger.pipeline import GENESIS_HASH, Pipeline

CLOSED_STATUSES = frozenset({"completed", "failed", "stopped", "cancelled", "terminated", "reset"})
STOPPED_BY_OPERATOR: dict[str, type[WorkflowClosed]] = {
    "cancelled": Cancelled,
    "terminated": Terminated,
}
"""The refusal an agent gets from a workflow an operator stopped, by its status."""
LEGACY_TOPIC = "bus.ledger:Workflow"
"""Where the aggregate lived before ``bus/`` had subpackages: ledgers written then name it."""
REQUEST_NAMESPACE = UUID("6f1c7a52-5d0e-4c4b-9a57-0c1a1ec1a1ec")
"""Workflow ids from clients' request ids (``uuid5``): one id per request id, everywhere."""

__all__ = ["CLOSED_STATUSES", "GENESIS_HASH", "LEGACY_TOPIC", "Workflow"]


class Workflow(Pipeline, Handoffs, Escalations, Audits, Controls, Participation):
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
        """Step key -> the version of the event holding its reply (or, carried over or
        snapshotted before, the reply itself): :mod:`bus.ledger.step_replies`."""
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

    @property
    def closed(self) -> bool:
        return self.status in CLOSED_STATUSES

    def require_open(self) -> None:
        """Agents act only in a running workflow: not a closed one, nor one a human holds."""
        if self.status in STOPPED_BY_OPERATOR:
            raise STOPPED_BY_OPERATOR[self.status](
                f"workflow {self.id} was {self.status}{self.stop_note()}: stop handling it"
            )
        if self.status == "reset":
            raise WorkflowClosed(f"workflow {self.id} was reset: it continues as {self.reset_to}")
        if self.closed:
            raise WorkflowClosed(f"workflow {self.id} is {self.status}")
        if self.status == "escalated":
            raise WorkflowEscalated(
                f"workflow {self.id} waits for a human: {self.open_escalations()}"
            )

    @event("WorkflowFailed")
    def fail(self, reason: str) -> None:
        self.status = "failed"

    @event("WorkflowStopped")
    def stop(self, reason: str) -> None:
        self.status = "stopped"


def keep_stored_topics(aggregate: type[Aggregate], *parts: type[Aggregate]) -> None:
    """Make each part's events the aggregate's own, under the topics they are stored as.

    eventsourcing triggers a base's event class (``Pipeline.ToolExecuted``) and gives the
    subclass a copy it cannot apply (only the triggered class knows its method); the copy is
    replaced by the class itself, and that class keeps the topic events of its kind were
    always stored under (``bus.ledger.workflow:Workflow.ToolExecuted``), so stored events of
    every age, and readers that filter the log by topic, find it.
    """
    for part in parts:
        for name, event_class in vars(part).items():
            if isinstance(event_class, type) and issubclass(event_class, DecoratedFuncCaller):
                event_class.TOPIC = f"{get_topic(aggregate)}.{name}"  # type: ignore[attr-defined]
                register_topic(event_class.TOPIC, event_class)  # type: ignore[attr-defined]
                setattr(aggregate, name, event_class)


keep_stored_topics(Workflow, Pipeline, Handoffs, Escalations, Audits, Controls)
register_topic(LEGACY_TOPIC, Workflow)  # old events and snapshots resolve to today's class
