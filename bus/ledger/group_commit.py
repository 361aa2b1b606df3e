"""Group commit: commands that arrive together share one transaction, and one fsync.

The runtime's ledger thread hands the ledger every command waiting at once
(:meth:`bus.runtime.steps.Steps.command`); :meth:`GroupCommit.command_batch` applies each
and saves every touched workflow in one ``save``. Each command is answered as if it had run
alone, and only after the shared commit: nothing is answered before its events are durable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import IntegrityError

from bus.ledger.errors import LedgerError

if TYPE_CHECKING:
    from bus.ledger.store import Ledger
    from bus.ledger.workflow import Workflow


@dataclass(frozen=True)
class Outcome:
    """What one change of a group commit returned, or raised."""

    value: Any = None
    error: BaseException | None = None

    def unwrap(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


@dataclass(frozen=True)
class NewWorkflow:
    """A start among a group commit's commands: the workflow is made when the batch runs
    (a failed save leaves an aggregate with nothing left to save, so a retry makes it anew)."""

    workflow_id: str
    """Its key in the batch: the workflow's id when started with a request id, else one of
    its own (the workflow's id is drawn when it is made)."""
    make: Callable[[], Workflow]
    repeatable: bool
    """Started with a request id: its id is derived from it, and a start asked again
    returns the workflow the first one made."""


Change = Callable[["Workflow"], Any] | NewWorkflow
"""A command of a group commit: a change of an existing workflow, or a start."""

SHARED_SECONDS = 10.0
"""How long after meeting another replica's write each batch reads its workflows first."""


class GroupCommit:
    """The ledger's group commit, mixed into :class:`~bus.ledger.store.Ledger`, whose
    ``_cached``, ``_decide``, ``_evict``, ``command``, ``save`` and ``start`` it uses."""

    _shared_until = 0.0
    """Until when (``time.monotonic``) other replicas are taken to write these workflows."""

    def command_batch(self: Ledger, commands: list[tuple[str, Change]]) -> list[Outcome]:
        """Apply every change, then commit all their events in one transaction (group commit).

        Each outcome is what :meth:`command` would have returned or raised for its change,
        and it stands only once the shared commit succeeded: nothing is answered before its
        events are durable. A change that fails unexpectedly leaves its workflow half-changed,
        so that workflow leaves the batch (evicted) and its other changes run alone after the
        commit.

        A batch that meets a concurrent writer (another replica wrote one of its workflows
        since this one cached it: a lone replica reads nothing before a command) runs again
        once, as a batch, on every workflow loaded afresh; only if it meets one again do its
        changes run alone, each retrying. From then on, for :data:`SHARED_SECONDS`, each
        workflow is caught up with the store before a batch changes it: with two replicas
        sharing the work nearly every batch met the other's writes, and running its changes
        alone took more than half the throughput.
        """
        try:
            outcomes = self._commit_batch(commands, alone_on_conflict=False)
        except IntegrityError:  # the workflows it touched were evicted: loaded as stored now
            outcomes = self._commit_batch(commands, alone_on_conflict=True)
        for index, (workflow_id, change) in enumerate(commands):
            if index not in outcomes:
                outcomes[index] = self._alone(workflow_id, change)
        return [outcomes[index] for index in range(len(commands))]

    def _commit_batch(
        self: Ledger, commands: list[tuple[str, Change]], alone_on_conflict: bool
    ) -> dict[int, Outcome]:
        """The batch as one commit: the outcomes it settled (the rest run alone after it).

        Meeting a concurrent writer evicts every workflow it touched; then its changes run
        alone (``alone_on_conflict``), or the :class:`IntegrityError` is raised again.
        """
        outcomes: dict[int, Outcome] = {}
        touched: dict[str, Workflow] = {}
        broken: set[str] = set()
        shared = time.monotonic() < self._shared_until
        for index, (workflow_id, change) in enumerate(commands):
            started_twice = isinstance(change, NewWorkflow) and workflow_id in touched
            if workflow_id in broken or started_twice:
                continue  # runs alone, after the commit (a start asked twice finds the first)
            fresh = shared and workflow_id not in touched  # not over this batch's own changes
            outcome, workflow = self._apply(workflow_id, change, fresh)
            outcomes[index] = outcome
            if workflow is not None:
                touched[workflow_id] = workflow
            elif not isinstance(outcome.error, LedgerError):  # it left the workflow half-changed
                broken.add(workflow_id)
                self._drop(workflow_id, touched, commands, outcomes, keep=index)
        try:
            if touched:
                self.save(*touched.values())
        except IntegrityError:  # another replica wrote one of these workflows
            self._shared_until = time.monotonic() + SHARED_SECONDS
            for workflow_id in list(touched):
                self._drop(workflow_id, touched, commands, outcomes)
            if not alone_on_conflict:
                raise
        except Exception as error:
            for index, (workflow_id, _) in enumerate(commands):
                if workflow_id in touched:
                    outcomes[index] = Outcome(error=error)
                    self._evict(workflow_id)
        return outcomes

    def _apply(
        self: Ledger, workflow_id: str, change: Change, fresh: bool
    ) -> tuple[Outcome, Workflow | None]:
        """One change of a batch, and the workflow to save (None: nothing to save); ``fresh``:
        on the workflow caught up with the store first."""
        if isinstance(change, NewWorkflow):
            workflow = change.make()
            return Outcome(workflow), workflow
        try:
            workflow = self._cached(workflow_id, fresh)
        except LedgerError as error:
            return Outcome(error=error), None
        try:
            return Outcome(self._decide(workflow, change)), workflow
        except LedgerError as error:  # a refusal: the events it triggered still commit
            return Outcome(error=error), workflow
        except Exception as error:
            return Outcome(error=error), None

    def _drop(
        self: Ledger,
        workflow_id: str,
        touched: dict[str, Workflow],
        commands: list[tuple[str, Change]],
        outcomes: dict[int, Outcome],
        keep: int = -1,
    ) -> None:
        """Take a workflow out of the batch: its changes so far (but ``keep``) run alone."""
        self._evict(workflow_id)
        touched.pop(workflow_id, None)
        for index, (other, _) in enumerate(commands):
            if other == workflow_id and index != keep:
                outcomes.pop(index, None)

    def _alone(self: Ledger, workflow_id: str, change: Change) -> Outcome:
        try:
            if isinstance(change, NewWorkflow):
                return Outcome(self.start(change))
            return Outcome(self.command(workflow_id, change))
        except Exception as error:
            return Outcome(error=error)
