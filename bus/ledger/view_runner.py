"""Feeds the ledger's events to the read models (``projections``), exactly once.

eventsourcing's SQLite recorder has no subscription, so the runner reads the
notification log from the views' tracked position, woken by its runtime's commits
(and by a timer, for other replicas' commits or a missed wake-up). The same runner serves
PostgreSQL. Several runners may share one set of views: an event applied twice
fails on its tracking record and rolls back, so it counts once. Runtime replicas take
turns by a lease (:data:`VIEWS_JOB`), as their relays do: each one reading and preparing
every batch only for one of them to apply it cost the others' CPU (2 runtimes on
PostgreSQL, 200 workflows in flight: 253-264 -> 279-290 steps/s).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from eventsourcing.persistence import (
    InfrastructureFactory,
    IntegrityError,
    Notification,
    Tracking,
)

from bus.ledger.scan import EnvelopeReader
from bus.ledger.setup import private_file
from bus.ledger.store import Ledger, sqlite_or_postgres_env
from bus.settings import Settings
from handoff_schemas import EventEnvelope
from projections.ledger_views import VIEWED_EVENTS, LedgerViews, statements
from projections.views import (
    INDEXES,
    VIEW_TABLES,
    PostgresViews,
    SQLiteViews,
    Statement,
    ViewsBusy,
    ViewStore,
)

log = logging.getLogger(__name__)


VIEWS_JOB = "views"
"""The runtime's views runners' lease key: one replica applies the views at a time."""

SETTLE_SECONDS = 0.05
"""How long a runtime's runner lets commits gather after applying before it applies again.
The views are a read model nobody waits on (the console and the CLI catch up before they
read), so at low load each commit need not be a views transaction of its own, taking the
GIL and the disk from the requests in flight: A/B, whole workflows on SQLite, 4 pairs,
1 / 16 in flight 96 -> 106 / 280 -> 312 steps/s, 200 in flight within noise."""

REBUILD_BATCH = 5000
"""Events per transaction in a rebuild: few commits, and a batch's statements in memory."""

VIEWED_OR_UNNAMED = VIEWED_EVENTS | {None}
"""What a runner decodes: the events a view reads, and any the fast reader cannot name."""


def open_views(settings: Settings, create: bool = True) -> ViewStore:
    """The views beside the ledger: ``<state>/views.db``, or the ledger's PostgreSQL schema.

    ``create=False`` (the runtime of a set-up deployment) leaves creating the tables to
    ``claimcheck init``, so replicas starting together do not race to create them.
    """
    url = settings.ledger_url()
    if url.startswith("sqlite"):
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        path = (settings.state_dir / "views.db").resolve()
        if create:
            private_file(path)  # the views show what the ledger holds: the same protection
        url = f"sqlite:///{path}"
    env = {**sqlite_or_postgres_env(url), "CREATE_TABLE": "y" if create else "n"}
    factory = InfrastructureFactory.construct(env=env)
    view_class = SQLiteViews if url.startswith("sqlite") else PostgresViews
    return factory.tracking_recorder(view_class)  # type: ignore[arg-type]


def rebuild_views(settings: Settings, ledger: Ledger) -> int:
    """Empty the views and their tracking, then apply every event again.

    The console list's indexes are built once, at the end: kept up row by row through
    each of a workflow's changes, they held a rebuild of 1,000,800 events on PostgreSQL
    to 60,000 events/s (70,000 without; on SQLite, 2-5% of its rate).
    """
    views = open_views(settings)
    drop_views(views)
    views = open_views(settings)  # recreates the tables
    for index in INDEXES:
        views.execute(f"DROP INDEX IF EXISTS {index.split()[5]}")
    runner = ViewRunner(ledger, views)
    last = ledger.recorder.max_notification_id() or 0
    try:
        while (reached := runner.catch_up(REBUILD_BATCH)) < last:
            time.sleep(0.1)  # a runtime's runner has the turn on these views for now
        return reached
    finally:
        runner.shutdown()
        build_indexes(views)


def build_indexes(views: ViewStore) -> None:
    """The console list's indexes, where missing: a rebuild drops them and builds them at
    its end, so one killed before then leaves them missing."""
    for index in INDEXES:
        views.execute(index)


def drop_views(views: ViewStore) -> None:
    for table in (
        *VIEW_TABLES,
        "tracking" if isinstance(views, SQLiteViews) else "cc_view_tracking",
    ):
        views.execute(f"DROP TABLE IF EXISTS {table}")


def run_now(apply: Callable[..., int], *args: Any) -> Future[int]:
    """``apply`` run on this thread, as an executor's ``submit`` would have it run."""
    done: Future[int] = Future()
    try:
        done.set_result(apply(*args))
    except Exception as error:
        done.set_exception(error)
    return done


class ViewRunner:
    def __init__(
        self,
        ledger: Ledger,
        views: ViewStore,
        poll_interval: float = 1.0,
        settle: float = SETTLE_SECONDS,
    ) -> None:
        self.ledger = ledger
        self.views = views
        self.projection = LedgerViews(view=views)  # type: ignore[arg-type]
        self.reader = EnvelopeReader(ledger)
        self.poll_interval = poll_interval
        self.settle = settle
        self._wake = asyncio.Event()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="views")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="views-writer")
        self._submit = self._writer.submit if views.prepares_while_applying else run_now

    async def close(self) -> None:
        """Wait for a catch-up in flight: the ledger must not close under it."""
        await asyncio.to_thread(self.shutdown)

    def shutdown(self) -> None:
        self._thread.shutdown()
        self._writer.shutdown()

    def catch_up(self, batch_size: int = 500) -> int:
        """Apply every event the views have not seen; return the position reached.

        Batches apply in order, one at a time, each in one transaction with a tracking
        record per event (so a batch that overlaps another runner's fails as a whole); if
        one fails, its events are applied one at a time, which skips what another runner
        applied or what cannot apply. On PostgreSQL one runner applies at a time: one that
        finds another applying, or ahead of it, ends here (:class:`ViewsBusy`) and the
        other carries on. There a server applies each batch, so the next is read and turned
        into statements meanwhile, on this thread: a rebuild of 100,000 events went from
        42,000-44,000 to 50,000-60,000 events/s. On SQLite one thread reads and writes: a
        second only took turns with it for the GIL.
        """
        reached = position = self.views.max_tracking_id(self.ledger.name) or 0
        applying: Future[int] | None = None
        try:
            while batch := self.ledger.notifications(position, batch_size):
                prepared = self._statements(batch)
                if applying is not None:
                    reached = applying.result()
                last = len(batch) < batch_size  # nothing to prepare meanwhile: apply it here
                applying = (run_now if last else self._submit)(self._apply, batch, prepared)
                position = batch[-1].id
                if last:
                    break
            if applying is not None:
                reached = applying.result()
        except ViewsBusy:  # another runner has the turn: it carries on from here
            pass
        return reached

    def _statements(self, batch: list[Notification]) -> list[Statement] | None:
        """A batch's SQL, or None when an event in it cannot become SQL. An event no view
        reads is not decoded (as ``verify`` reads only the evidence)."""
        try:
            return [
                statement
                for n in batch
                if self.reader.event_name(n.topic) in VIEWED_OR_UNNAMED
                for statement in statements(self.envelope(n))
            ]
        except Exception:
            return None

    def _apply(self, batch: list[Notification], sql: list[Statement] | None) -> int:
        """Apply a batch in one commit, or its events one by one; return its last position."""
        if sql is None:  # an event that cannot become SQL
            self.apply_one_by_one(batch)
            return batch[-1].id
        try:
            self.views.apply_batch(sql, self.ledger.name, [n.id for n in batch])
        except ViewsBusy:
            raise
        except Exception:  # an event that cannot apply, or another runner's overlapping batch
            self.apply_one_by_one(batch)
        return batch[-1].id

    def envelope(self, notification: Notification) -> EventEnvelope:
        return self.reader.envelope(notification)

    def apply_one_by_one(self, batch: list[Notification]) -> None:
        for notification in batch:
            tracking = Tracking(self.ledger.name, notification.id)
            try:
                self.projection.process_event(self.envelope(notification), tracking)
            except IntegrityError:  # another runner applied it first
                pass
            except ViewsBusy:  # nothing written: the runner with the turn applies it
                raise
            except Exception as error:  # one bad event must not stall every view
                self.skip(notification.id, tracking, error)

    def skip(self, position: int, tracking: Tracking, error: Exception) -> None:
        """Track past an event the views cannot apply, so the ones after it still count."""
        log.error("views skipped the event at position %d: %r", position, error)
        try:
            self.views.apply([], tracking)
        except IntegrityError:
            pass

    def _resume(self) -> int:
        """Where the views are, with the indexes a killed rebuild left missing built again."""
        try:
            build_indexes(self.views)
        except Exception as error:  # another process building them at the same moment
            log.warning("views: the console's indexes were not built: %r", error)
        return self.views.max_tracking_id(self.ledger.name) or 0

    def wake(self) -> None:
        """Called after a local commit. Another replica's commits are found by the timer:
        listening to the events stream instead would cost this process every event's
        bytes."""
        self._wake.set()

    async def run(self) -> None:
        """Keep the views caught up; a runtime runs this while it holds :data:`VIEWS_JOB`."""
        loop = asyncio.get_running_loop()
        position = await loop.run_in_executor(self._thread, self._resume)
        log.info("views resume after position %d", position)
        while True:
            self._wake.clear()
            await loop.run_in_executor(self._thread, self.catch_up)
            await asyncio.sleep(self.settle)
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            except TimeoutError:
                pass
