"""The sweeper: the runtime's watch on workflows that nobody is moving forward.

Everything else in the runtime reacts to a request; a workflow whose agent died
after acknowledging its handoff, or whose handoff was lost, sends none, and
would stay ``running`` for ever. Every ``sweep_interval`` seconds each runtime
replica looks at the running workflows and finds:

- those past their task's deadline (``[deadlines]`` in the policy), a
  ``deadline_exceeded`` failure (default: the workflow fails);
- those whose last event is older than the step lease, a ``step_stalled``
  failure (default: the handoff is delivered again once, then a human is asked).

Both go through the failure table (:func:`bus.runtime.governance.after_failure`),
so the finding, the decision and its consequence are events committed together.
Each action is a ledger command that checks the condition again on the
workflow's latest state: two replicas sweeping at once act once (the ledger's
optimistic concurrency makes the second see the first's events). Escalated
workflows are left alone: they wait for a human, and say so. A workflow waiting for an
operator's signal has no step lease, but its deadline still holds.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from uuid import UUID

from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from bus.ledger import Ledger, Workflow
from bus.ledger.scan import EnvelopeReader
from bus.ledger.workflow import LEGACY_TOPIC
from bus.runtime.governance import after_failure
from bus.runtime.policy import Policy
from bus.runtime.steps import Steps

log = logging.getLogger(__name__)

OPENING = ("WorkflowStarted", "WorkflowRetried")  # an operator's retry reopens a failed one
CLOSING = (
    "WorkflowCompleted",
    "WorkflowFailed",
    "WorkflowStopped",
    "BudgetExceeded",
    "WorkflowCancelled",
    "WorkflowTerminated",
    "WorkflowReset",
)


def topics(names: tuple[str, ...]) -> list[str]:
    """The stored topics of these events, today's and those of ledgers written before."""
    return [
        topic
        for name in names
        for topic in (get_topic(getattr(Workflow, name)), f"{LEGACY_TOPIC}.{name}")
    ]


def is_cached(ledger: Ledger, workflow_id: str) -> bool:
    """Whether reading the workflow now costs no load from the store (a peek: the cache's
    order of use is left as it was)."""
    entries = getattr(ledger.repository.cache, "cache", None)
    return isinstance(entries, dict) and UUID(workflow_id) in entries


def first_and_last_times(ledger: Ledger, workflow_id: str) -> tuple[datetime, datetime] | None:
    """When the workflow started and when its last event was recorded, from the store: two
    rows decoded, however long its history (None: it has no events)."""
    uuid = UUID(workflow_id)
    first = ledger.recorder.select_events(uuid, limit=1)
    last = ledger.recorder.select_events(uuid, desc=True, limit=1)
    if not first or not last:
        return None
    started = ledger.mapper.to_domain_event(first[0]).timestamp
    return started, ledger.mapper.to_domain_event(last[0]).timestamp


class OpenWorkflows:
    """Which workflows have started and not closed, and when each started, followed along
    the notification log.

    Only the opening and closing events are read (a topic filter), so a sweep costs
    little however long the workflows' histories are.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.position = 0
        self.open: dict[str, datetime | None] = {}
        self._reader = EnvelopeReader(ledger)
        self._started = set(topics(("WorkflowStarted",)))
        self._opening = set(topics(OPENING))
        self._topics = [*self._opening, *topics(CLOSING)]

    def refresh(self) -> dict[str, datetime | None]:
        """Each open workflow and when it started; None for one an operator's retry reopened
        (its deadline counts from its first start)."""
        while batch := self.ledger.recorder.select_notifications(
            self.position + 1, 1000, topics=self._topics
        ):
            for notification in batch:
                workflow_id = str(notification.originator_id)
                if notification.topic in self._started:
                    self.open[workflow_id] = self._started_at(notification)
                elif notification.topic in self._opening:
                    self.open[workflow_id] = None
                else:
                    self.open.pop(workflow_id, None)
            self.position = batch[-1].id
        return dict(sorted(self.open.items()))

    def _started_at(self, notification: Notification) -> datetime | None:
        try:
            return self._reader.envelope(notification).timestamp
        except Exception:  # a start today's code cannot read: the sweeper looks at it instead
            return None


class Sweeper:
    def __init__(self, steps: Steps, policy: Policy, interval: float) -> None:
        self.steps = steps
        self.policy = policy
        self.interval = interval
        self.workflows = OpenWorkflows(steps.ledger)
        self.not_due_before: dict[str, datetime] = {}
        """Open workflows not yet due, and the soonest each can be: from its start until a
        first look, then from what that look found."""
        self.quiet: dict[str, datetime | None] = {}
        """Open workflows that are not running (escalated, or waiting for a signal), and
        their deadline if it is still to come: sweeps skip each until then, or until it
        records an event (which may set it running, under a step lease)."""
        self.watched_to = 0
        """The ledger's position up to which :meth:`_moved` has looked."""
        self.unreadable: set[str] = set()
        """Open workflows a sweep could not read or act on, already reported."""

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # a sweep that failed must not end the sweeping
                log.exception("sweep failed; the next one runs in %s s", self.interval)
            await asyncio.sleep(self.interval)

    async def sweep(self) -> list[str]:
        """Act on every running workflow past its deadline or its step lease; return their ids."""
        acted = []
        opened = await self.steps.in_ledger_thread(self.workflows.refresh)
        moved = await self.steps.in_ledger_thread(self._moved)
        known, now = self.not_due_before, datetime.now(UTC)
        self.quiet = {
            workflow_id: due
            for workflow_id, due in self.quiet.items()
            if workflow_id in opened and workflow_id not in moved and (due is None or now <= due)
        }
        self.not_due_before = {}
        for workflow_id, started in opened.items():
            due = known.get(workflow_id) or (started and self.soonest_due(started, started))
            if due and now <= due:
                self.not_due_before[workflow_id] = due
        for workflow_id in opened:
            if workflow_id in self.not_due_before or workflow_id in self.quiet:
                continue
            try:
                if await self.acted_on(workflow_id):
                    acted.append(workflow_id)
            except Exception:  # this one only: the workflows after it are still swept
                self._report_unreadable(workflow_id)
            else:
                self.unreadable.discard(workflow_id)  # repaired: a new failure is said again
        return acted

    async def acted_on(self, workflow_id: str) -> bool:
        """Look at the workflow and, if it is overdue, act on it; whether it acted."""
        overdue = await self.steps.in_ledger_thread(self.look, workflow_id)
        return overdue is not None and await self.steps.command(workflow_id, self.act)

    def _report_unreadable(self, workflow_id: str) -> None:
        """Say once (not every sweep) that a workflow could not be swept; each sweep tries
        it again, so a repaired workflow is swept."""
        if workflow_id not in self.unreadable:
            self.unreadable.add(workflow_id)
            log.exception("workflow %s could not be swept; the others were", workflow_id)

    def look(self, workflow_id: str) -> tuple[str, str] | None:
        """:meth:`finding` for one workflow, loading it only when it may be due.

        With thousands of open workflows, most are out of the aggregate cache: loading each
        one every sweep kept the ledger thread busy and steps waited behind it. A workflow
        whose start and last event are too recent for any deadline or the step lease cannot
        be due; its first and last events say so (the stored ones, when it is not cached),
        and the sweeps skip it until it may be (:attr:`not_due_before`): what it records
        meanwhile only makes it due later. Asking the store for each open workflow on every
        sweep took 4% of a busy runtime with 12,000 of them open. A loaded workflow that is
        not due is skipped in the same way until it may be, and one that is not running
        also until it records an event (:attr:`quiet`): 5,000 escalated workflows, loaded
        every sweep, had kept the ledger thread busy 2.7 s a sweep.
        """
        ledger = self.steps.ledger
        if not is_cached(ledger, workflow_id):
            times = first_and_last_times(ledger, workflow_id)
            if times is not None and self._skipped_while_young(workflow_id, *times):
                return None
        found, running, due = ledger.read(
            workflow_id, lambda w: (self.finding(w), w.status == "running", self.due_at(w))
        )
        if found is None and running and due is not None:  # its events only make it due later
            self.not_due_before[workflow_id] = due
        elif found is None:  # what it records next may set it running, under a step lease
            self.quiet[workflow_id] = due
        return found

    def _moved(self) -> set[str]:
        """The workflows that recorded an event since the last sweep: read only while some
        are quiet, the only ones an event is looked for to wake."""
        ledger = self.steps.ledger
        upto = ledger.recorder.max_notification_id() or 0
        moved = ledger.moved(self.watched_to, upto) if self.quiet else set()
        self.watched_to = upto
        return moved

    def _skipped_while_young(self, workflow_id: str, started: datetime, last: datetime) -> bool:
        """Whether the workflow is too young to be due; if so, sweeps skip it until it may be."""
        due = self.soonest_due(started, last)
        if datetime.now(UTC) > due:
            return False
        self.not_due_before[workflow_id] = due
        return True

    def soonest_due(self, started: datetime, last: datetime) -> datetime:
        """When a workflow that started and last moved at these times may first be due: at
        the shortest deadline of any task, or when its step lease runs out."""
        deadlines = self.policy.deadlines
        shortest = min([deadlines.default_task_seconds, *deadlines.tasks.values()])
        return min(
            started + timedelta(seconds=shortest),
            last + timedelta(seconds=deadlines.step_lease_seconds),
        )

    def due_at(self, workflow: Workflow) -> datetime | None:
        """When time alone makes :meth:`finding` find something: its deadline or the end of
        its step lease, whichever is sooner; None if only a new event of its own can."""
        if workflow.status not in ("running", "waiting"):  # escalated: a human's answer
            return None
        times = (self.deadline_at(workflow), self.lease_ends_at(workflow))
        return min((time for time in times if time is not None), default=None)

    def deadline_at(self, workflow: Workflow) -> datetime | None:
        """When its task's deadline passes; None once that passing is recorded."""
        if any(f["kind"] == "deadline_exceeded" for f in workflow.failures):
            return None
        deadline = self.policy.deadlines.for_task(workflow.task)
        return workflow.created_on + timedelta(seconds=deadline)

    def lease_ends_at(self, workflow: Workflow) -> datetime | None:
        """When its step lease runs out; None while it waits for a signal (no step is
        leased, the deadline holds)."""
        if workflow.status == "waiting":
            return None
        lease = self.policy.deadlines.step_lease_seconds
        return workflow.modified_on + timedelta(seconds=lease)

    def finding(self, workflow: Workflow) -> tuple[str, str] | None:
        """``(kind, detail)`` when the sweeper must act on ``workflow`` now, else ``None``."""
        if workflow.status not in ("running", "waiting"):
            return None
        now = datetime.now(UTC)
        deadlines = self.policy.deadlines
        deadline_at = self.deadline_at(workflow)
        if deadline_at is not None and now > deadline_at:
            return (
                "deadline_exceeded",
                f"task {workflow.task!r} passed its deadline of "
                f"{deadlines.for_task(workflow.task):g} s "
                f"(started {workflow.created_on.isoformat(timespec='seconds')})",
            )
        lease_ends_at = self.lease_ends_at(workflow)
        if lease_ends_at is not None and now > lease_ends_at:
            idle = (now - workflow.modified_on).total_seconds()
            handoff = waiting_on(workflow)
            who = f"{handoff['to']} (handoff {handoff['handoffId']})" if handoff else "nobody"
            return (
                "step_stalled",
                f"no progress for {idle:.0f} s (step lease {deadlines.step_lease_seconds:g} s) "
                f"since {workflow.modified_on.isoformat(timespec='seconds')}; waiting on {who}",
            )
        return None

    def act(self, workflow: Workflow) -> bool:
        """Record the finding and apply the failure table; ``False`` if it no longer holds."""
        found = self.finding(workflow)
        if found is None:
            return False
        kind, detail = found
        handoff = waiting_on(workflow)
        if handoff is None:  # nothing to deliver again or to ask about: end it
            workflow.classify_failure("runtime", kind, detail, kind)
            workflow.fail(f"{kind}: {detail}")
            return True
        step_key = f"{handoff['handoffId']}/{kind}"
        advice = after_failure(
            workflow, self.policy, handoff["to"], kind, detail, step_key, per_step=True
        )
        if advice.strategy == "retry":  # deliver the handoff again: its agent replays and goes on
            traceparent = workflow.traceparents.get(handoff["handoffId"], "")
            workflow.resume(handoff, f"{kind}-{advice.attempt}", traceparent)
        log.warning("workflow %s: %s -> %s", workflow.id, detail, advice.strategy)
        return True


def waiting_on(workflow: Workflow) -> dict | None:
    """The latest handoff: the agent whose work the workflow waits for."""
    return next(reversed(workflow.handoffs.values()), None)
