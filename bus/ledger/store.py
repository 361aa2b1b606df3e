"""The event store: the eventsourcing application that holds every workflow, on SQLite or
PostgreSQL.

The runtime is the only writer. Several runtime replicas may share a store: optimistic
concurrency on the aggregate version turns a race into an ``IntegrityError``, and
:meth:`Ledger.command` reloads and retries.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse
from uuid import UUID

import msgspec
from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
    project_aggregate,
)
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    Notification,
    OperationalError,
)
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import get_topic, retry

from bus.ledger.errors import LedgerError, UnknownWorkflow
from bus.ledger.group_commit import GroupCommit, NewWorkflow
from bus.ledger.replay import replay
from bus.ledger.step_replies import (
    carried_steps,
    recorded_replies,
    recorded_reply,
    snapshot_due,
)
from bus.ledger.workflow import LEGACY_TOPIC, Workflow
from handoff_schemas import EventEnvelope

T = TypeVar("T")


STARTED_TOPICS = [get_topic(Workflow.WorkflowStarted), f"{LEGACY_TOPIC}.WorkflowStarted"]  # type: ignore[attr-defined]
"""How a workflow's first event is named, today and in ledgers written before."""


def reset_point(
    history: list[EventEnvelope], to_event: int | None, to_checkpoint: str | None
) -> int:
    """The event a reset continues after: ``to_event``, or the last checkpoint so named."""
    if to_checkpoint is not None:
        reached = [
            e.version
            for e in history
            if e.type == "CheckpointReached" and e.data.get("name") == to_checkpoint
        ]
        if not reached:
            raise LedgerError(f"the workflow never reached a checkpoint {to_checkpoint!r}")
        return reached[-1]
    assert to_event is not None
    if not 1 <= to_event <= len(history):
        raise LedgerError(
            f"event {to_event} is outside this workflow's events (1 to {len(history)})"
        )
    return to_event


def sqlite_or_postgres_env(url: str) -> dict[str, str]:
    """eventsourcing's environment variables for a ``sqlite:///`` or ``postgresql://`` URL."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": parsed.path}
    if parsed.scheme in ("postgres", "postgresql"):
        schema = parse_qs(parsed.query).get("schema", [""])[0]
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parsed.path.lstrip("/"),
            "POSTGRES_HOST": parsed.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parsed.port or 5432),
            "POSTGRES_USER": parsed.username or "postgres",
            "POSTGRES_PASSWORD": parsed.password or "",
            "POSTGRES_SCHEMA": schema,
            # A wrong address is an error within seconds, not after the library's 30.
            "POSTGRES_CONNECT_TIMEOUT": parse_qs(parsed.query).get("connect_timeout", ["5"])[0],
        }
    raise ValueError(f"unsupported ledger URL {url!r}: use sqlite:///PATH or postgresql://...")


DASHED_ID = (
    "".join(
        f"substr(originator_id, {start}, {length}) || '-' || "
        for start, length in ((1, 8), (9, 4), (13, 4), (17, 4))
    )
    + "substr(originator_id, 21)"
)
"""A stored UUID's hex (how eventsourcing keeps it) as ``str(UUID)`` writes it, in SQL."""


def sqlite_rows(recorder: SQLiteApplicationRecorder, query: str, params: tuple) -> list[tuple]:
    """Plain tuples from the events table (``{events}`` in ``query``), no row objects."""
    with recorder.datastore.transaction(commit=False) as cursor:
        rows = cursor.sqlite_cursor
        rows.row_factory = None
        rows.execute(query.format(events=recorder.events_table_name), params)
        return rows.fetchall()


@retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)  # as eventsourcing's read
def postgres_rows(recorder: Any, query: str, params: tuple) -> list[tuple]:
    """Plain tuples from the events table (``{events}`` in ``query``), as a prepared statement
    (psycopg is there only for a PostgreSQL ledger)."""
    from psycopg.rows import tuple_row
    from psycopg.sql import SQL, Identifier

    events = Identifier(recorder.datastore.schema, recorder.events_table_name)
    with recorder.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as rows:
        rows.execute(SQL(query).format(events=events), params, prepare=True)
        return rows.fetchall()


class Ledger(GroupCommit, Application[UUID]):
    """The eventsourcing application holding every workflow.

    Its methods are synchronous (the eventsourcing recorders are); the runtime
    calls them from a worker thread so the event loop never blocks on a commit.
    """

    name = "claimcheck"
    env = {
        "AGGREGATE_CACHE_MAXSIZE": "1000",
        # A command works on the cached aggregate as it is: were another replica ahead of
        # it, the save fails on the version and the command reloads and retries. Only reads
        # catch up with the store first (:meth:`read`), so a command costs no SELECT.
        "AGGREGATE_CACHE_FASTFORWARD": "n",
        "IS_SNAPSHOTTING_ENABLED": "y",
    }
    snapshotting_intervals = {Workflow: 100}
    """The shortest interval: :meth:`_take_snapshots` lengthens it as a workflow grows."""

    @classmethod
    def from_url(cls, url: str) -> Ledger:
        return cls(env=sqlite_or_postgres_env(url))

    @staticmethod
    def starting(
        task: str,
        agent: str,
        artifact_id: str,
        scope: str,
        started_by: str,
        budget_usd: float,
        handoff: dict[str, Any],
        traceparent: str = "",
        request_id: str = "",
    ) -> NewWorkflow:
        """A start to commit with other commands (:meth:`command_batch`)."""
        trace_id = traceparent.split("-")[1] if traceparent.count("-") == 3 else ""
        workflow_id = Workflow.create_id(request_id)

        def make() -> Workflow:
            workflow = Workflow(
                task, agent, artifact_id, scope, started_by, budget_usd, trace_id, request_id
            )
            workflow.send_handoff({**handoff, "workflowId": str(workflow.id)}, traceparent)
            return workflow

        return NewWorkflow(str(workflow_id), make, bool(request_id))

    def start(self, new: NewWorkflow) -> Workflow:
        """Start a workflow (:meth:`starting`); with a request id asked again, return the one
        it started."""
        workflow = new.make()
        try:
            self.save(workflow)
        except IntegrityError:
            if not new.repeatable:
                raise
            # The id comes from the request id: this request started it before (or another
            # replica did just now). Saving first and looking only then costs a start no read.
            return self.workflow(new.workflow_id)
        return workflow

    def branch(
        self,
        workflow_id: str,
        to_event: int | None,
        to_checkpoint: str | None,
        by: str,
        role: str,
        reason: str,
    ) -> Workflow:
        """Reset: continue a workflow from one of its events as a new workflow (a branch).

        The branch starts with the state the workflow had after that event (or after the
        last time it reached the checkpoint), and its open handlings are delivered again:
        the steps recorded up to there replay, the rest run again. The old workflow is
        closed as ``reset`` and links to the branch; both are saved in one commit.
        """
        old = self.workflow(workflow_id)
        if old.status == "reset":
            raise LedgerError(f"workflow {workflow_id} was already reset: see {old.reset_to}")
        history = self.history(workflow_id)
        version = reset_point(history, to_event, to_checkpoint)
        past = replay(history, version)
        new = Workflow(
            old.task,
            old.agent,
            old.artifact_id,
            old.scope,
            old.started_by,
            old.budget_usd,
            old.trace_id,
        )
        carried = past.carried_state(str(new.id))
        carried["steps"] = carried_steps(history, version)  # replies inline: not in new's events
        new.start_branch(workflow_id, version, by, role, reason, carried)
        for handling in new.open_handlings():
            new.resume(new.handoffs[handling], f"reset-{workflow_id}-{version}")
        old.mark_reset(str(new.id), version, by, role, reason)
        self.save(old, new)
        self._evict(workflow_id)  # the runtime's cached copy is behind the commit
        return new

    def workflow(self, workflow_id: str) -> Workflow:
        """A private copy of the workflow as stored now."""
        return copy.deepcopy(self._cached(workflow_id, fresh=True))

    def recorded_reply(self, workflow: Workflow, step_key: str) -> Any | None:
        """The reply recorded for ``step_key`` of ``workflow`` (None: never completed), read
        from the event that recorded it; call it in the thread that owns ``workflow``."""
        return recorded_reply(self, workflow, step_key)

    def recorded_replies(self, workflow: Workflow, step_keys: list[str]) -> dict[str, Any]:
        """The replies of recorded steps (each key in ``workflow.steps``), read together."""
        return recorded_replies(self, workflow, step_keys)

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        """Snapshot the aggregates just saved, as they are in memory, when their events
        crossed a boundary of their own interval (:func:`snapshot_due`).

        eventsourcing would rebuild each one from the store first (the last snapshot and
        the events since), paying for the whole state twice more per snapshot; the saved
        aggregate is that same state, and the interval grows with it, so a long
        workflow's snapshots cost each of its events a bounded amount.
        """
        if self.snapshots is None:
            return
        saved = Counter(event.originator_id for event in processing_event.events)
        snapshots = [
            type(aggregate).Snapshot.take(aggregate)
            for aggregate_id, aggregate in processing_event.aggregates.items()
            if isinstance(aggregate, Workflow) and snapshot_due(aggregate, saved[aggregate_id])
        ]
        if snapshots:
            self.snapshots.put(snapshots)

    def command(self, workflow_id: str, change: Callable[[Workflow], T], attempts: int = 5) -> T:
        """Apply ``change`` to the workflow and commit, retrying on a concurrent writer.

        ``change`` may raise a :class:`LedgerError` to refuse; events it triggered
        before refusing (a rejected handoff, say) are still committed, so the
        reason for a refusal is never lost.
        """
        for attempt in range(attempts):
            # The cached aggregate itself, not a copy (copying grows with the workflow):
            # whatever goes wrong before its events are saved evicts it from the cache.
            workflow = self._cached(workflow_id)
            try:
                result = self._decide(workflow, change)
            except LedgerError:
                self.save(workflow)
                raise
            except BaseException:
                self._evict(workflow_id)
                raise
            try:
                self.save(workflow)
            except IntegrityError:
                self._evict(workflow_id)
                if attempt == attempts - 1:
                    raise
                continue
            return result
        raise AssertionError("unreachable")

    def command_detached(
        self, workflow_id: str, change: Callable[[Workflow], T], attempts: int = 5
    ) -> T:
        """:meth:`command` on a private copy rebuilt from the stored events, for a writer
        outside the runtime's ledger thread (the relay recording a quarantine).

        It never touches the cached aggregate the ledger thread is changing; a concurrent
        write to the same workflow is an ``IntegrityError`` here (retried) or there (the
        ledger thread reloads and retries).
        """
        for attempt in range(attempts):
            try:
                workflow = self.repository.get(UUID(workflow_id), version=sys.maxsize)
            except (ValueError, AggregateNotFoundError):
                raise UnknownWorkflow(f"no workflow {workflow_id!r}") from None
            result = change(workflow)
            try:
                self.save(workflow)
            except IntegrityError:
                if attempt == attempts - 1:
                    raise
                continue
            return result
        raise AssertionError("unreachable")

    def read(self, workflow_id: str, view: Callable[[Workflow], T]) -> T:
        """``view`` of the cached aggregate as stored now, without copying it; ``view`` must
        not mutate it."""
        return view(self._cached(workflow_id, fresh=True))

    def _cached(self, workflow_id: str, fresh: bool = False) -> Workflow:
        """The cached aggregate itself; ``fresh``: first brought up to the stored version
        (another replica, or :meth:`command_detached`, may have written since)."""
        try:
            workflow: Workflow = self.repository.get(UUID(workflow_id), deepcopy_from_cache=False)
        except (ValueError, AggregateNotFoundError):
            raise UnknownWorkflow(f"no workflow {workflow_id!r}") from None
        if fresh:
            self._catch_up(workflow)
        return workflow

    def _catch_up(self, workflow: Workflow) -> bool:
        """Apply the events stored after the cached version; whether there were any."""
        later = list(
            self.repository.event_store.get(originator_id=workflow.id, gt=workflow.version)
        )
        project_aggregate(workflow, later)
        return bool(later)

    def _decide(self, workflow: Workflow, change: Callable[[Workflow], T]) -> T:
        """``change`` on the cached aggregate; a refusal that records nothing is decided
        again on the stored state if another writer moved it on, since no version check
        on save would notice (one that records events meets that check)."""
        try:
            return change(workflow)
        except LedgerError:
            if workflow.pending_events or not self._catch_up(workflow):
                raise
        return change(workflow)

    def _evict(self, workflow_id: str) -> None:
        if self.repository.cache is not None:
            with contextlib.suppress(KeyError):
                self.repository.cache.get(UUID(workflow_id), evict=True)

    def history(self, workflow_id: str, until: int | None = None) -> list[EventEnvelope]:
        """A workflow's events in order, as they appear on the events stream."""
        workflow = self.workflow(workflow_id)
        stored = self.recorder.select_events(workflow.id, lte=until)
        return [self.envelope(self.mapper.to_domain_event(item)) for item in stored]

    def workflow_ids(self) -> list[str]:
        """Every workflow, in the order they started."""
        ids: list[str] = []
        after = 0
        while batch := self.recorder.select_notifications(after + 1, 1000, topics=STARTED_TOPICS):
            ids.extend(str(notification.originator_id) for notification in batch)
            after = batch[-1].id
        return ids

    def moved(self, after: int, upto: int) -> set[str]:
        """The workflows that recorded an event at a position after ``after``, up to ``upto``:
        the ids alone, read by the database, for the sweeper's watch on workflows only an
        event can wake."""
        if isinstance(self.recorder, SQLiteApplicationRecorder):
            query = "SELECT DISTINCT originator_id FROM {events} WHERE rowid > ? AND rowid <= ?"
            rows = sqlite_rows(self.recorder, query, (after, upto))
            return {str(UUID(row[0])) for row in rows}  # hex or text, as it is kept
        query = (  # the only other store a ledger has
            "SELECT DISTINCT originator_id::text FROM {events} "
            "WHERE notification_id > %s AND notification_id <= %s"
        )
        return {row[0] for row in postgres_rows(self.recorder, query, (after, upto))}

    def notifications(self, after: int, limit: int = 500) -> list[Notification]:
        """Up to ``limit`` notifications after position ``after``, for the relay, ``verify``
        and the views. They are read as plain rows with each originator id made by the
        database in ``str(UUID)``'s form (every reader takes it as a string):
        eventsourcing's read built a row object and a UUID per event, three quarters of
        the read's time on SQLite and a sixth of a rebuild's on PostgreSQL."""
        recorder = self.recorder
        if (
            isinstance(recorder, SQLiteApplicationRecorder)
            and recorder.datastore.originator_id_type == "uuid"
        ):
            query = (  # the dashed id made by SQLite
                f"SELECT {DASHED_ID}, originator_version, topic, state, rowid "
                "FROM {events} WHERE rowid > ? ORDER BY rowid LIMIT ?"
            )
            return [Notification(*row) for row in sqlite_rows(recorder, query, (after, limit))]
        postgres = sys.modules.get("eventsourcing.postgres")  # loaded for a PostgreSQL ledger
        if postgres is not None and isinstance(recorder, postgres.PostgresApplicationRecorder):
            query = (
                "SELECT originator_id::text, originator_version, topic, state, notification_id "
                "FROM {events} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
            )
            return [Notification(*row) for row in postgres_rows(recorder, query, (after, limit))]
        return list(recorder.select_notifications(after + 1, limit))

    def envelope(self, domain_event: Any, position: int | None = None) -> EventEnvelope:
        data = {
            key: value
            for key, value in vars(domain_event).items()
            if key not in ("originator_id", "originator_version", "timestamp", "originator_topic")
        }
        return EventEnvelope(
            position=position,
            workflow_id=str(domain_event.originator_id),
            version=domain_event.originator_version,
            type=type(domain_event).__name__,
            timestamp=domain_event.timestamp,
            data=msgspec.to_builtins(data),
        )
