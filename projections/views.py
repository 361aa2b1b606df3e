"""Materialised views on SQLite or PostgreSQL, each an eventsourcing tracking recorder.

A view's rows and its tracking record commit in one transaction, so each event
is applied exactly once: applying an event again fails on the tracking record
and rolls back. The SQL is portable between the two backends; PostgreSQL
places the tables in the ledger's schema.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from functools import cache
from typing import Any, Protocol

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.sqlite import (
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteDatastore,
    SQLiteTrackingRecorder,
)
from psycopg.sql import SQL

Statement = tuple[str, Sequence[Any]]
"""SQL with ``?`` placeholders, and its parameters."""

TABLES = [
    "CREATE TABLE IF NOT EXISTS cc_workflows (workflow_id TEXT PRIMARY KEY, task TEXT, "
    "status TEXT, current_step TEXT, budget_usd DOUBLE PRECISION, started_at TEXT, "
    "updated_at TEXT)",
    "CREATE TABLE IF NOT EXISTS cc_steps (workflow_id TEXT, step_key TEXT, op TEXT, "
    "PRIMARY KEY (workflow_id, step_key))",
    "CREATE TABLE IF NOT EXISTS cc_checkpoints (workflow_id TEXT, name TEXT, data TEXT, "
    "PRIMARY KEY (workflow_id, name))",
    "CREATE TABLE IF NOT EXISTS cc_claims (claim_id TEXT PRIMARY KEY, workflow_id TEXT, "
    "agent TEXT, statement TEXT, asserts TEXT, verdict TEXT, reason TEXT, evidence_ids TEXT, "
    "made_at TEXT)",
    "CREATE TABLE IF NOT EXISTS cc_checkpoint_backing (workflow_id TEXT, name TEXT, "
    "evidence_ids TEXT, PRIMARY KEY (workflow_id, name))",
    "CREATE TABLE IF NOT EXISTS cc_claim_items (claim_id TEXT, position INTEGER, "
    "action TEXT, target TEXT, status TEXT, evidence_id TEXT, facts TEXT, verdict TEXT, "
    "reason TEXT, PRIMARY KEY (claim_id, position))",
    "CREATE TABLE IF NOT EXISTS cc_claim_notes (claim_id TEXT PRIMARY KEY, remarks TEXT, "
    "missing TEXT)",
    "CREATE TABLE IF NOT EXISTS cc_external_checks (workflow_id TEXT, evidence_id TEXT, "
    "tool TEXT, outcome TEXT, problems TEXT, checked_at TEXT, "
    "PRIMARY KEY (workflow_id, evidence_id))",
    "CREATE TABLE IF NOT EXISTS cc_costs (workflow_id TEXT, agent TEXT, model TEXT, "
    "usd DOUBLE PRECISION, input_tokens BIGINT, output_tokens BIGINT, calls BIGINT, "
    "PRIMARY KEY (workflow_id, agent, model))",
    "CREATE TABLE IF NOT EXISTS cc_escalations (escalation_id TEXT PRIMARY KEY, "
    "workflow_id TEXT, kind TEXT, agent TEXT, reason TEXT, raised_at TEXT, decision TEXT, "
    "approver TEXT)",
    "CREATE TABLE IF NOT EXISTS cc_console_workflows (workflow_id TEXT PRIMARY KEY, task TEXT, "
    "scope TEXT, status TEXT, agent TEXT, started_at TEXT, updated_at TEXT, "
    "cost_usd DOUBLE PRECISION, unverified_claims BIGINT, contradicted_claims BIGINT, "
    "denied_actions BIGINT, open_escalations BIGINT)",
]

INDEXES = [  # the console's list: newest first, within each filter
    "CREATE INDEX IF NOT EXISTS cc_console_started ON cc_console_workflows "
    "(started_at, workflow_id)",
    "CREATE INDEX IF NOT EXISTS cc_console_status ON cc_console_workflows "
    "(status, started_at, workflow_id)",
    "CREATE INDEX IF NOT EXISTS cc_console_agent ON cc_console_workflows "
    "(agent, started_at, workflow_id)",
]


VIEW_TABLES = (
    "cc_workflows",
    "cc_steps",
    "cc_checkpoints",
    "cc_checkpoint_backing",
    "cc_claims",
    "cc_claim_items",
    "cc_claim_notes",
    "cc_external_checks",
    "cc_costs",
    "cc_escalations",
    "cc_console_workflows",
)


class ViewStore(Protocol):
    """What a projection needs from a view, whatever the backend."""

    def apply(self, statements: Sequence[Statement], tracking: Tracking) -> None: ...

    def apply_batch(
        self, statements: Sequence[Statement], application_name: str, positions: Sequence[int]
    ) -> None:
        """Many events' statements, and their positions tracked, in one transaction."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def max_tracking_id(self, application_name: str) -> int | None: ...

    def execute(self, sql: str) -> None: ...


STATEMENT_CACHE = 256
"""Prepared statements an SQLite views connection keeps: every view statement, and then some."""

CHECKPOINT_PAGES = 10_000
"""WAL pages (40 MB) between a views connection's checkpoints. A checkpoint syncs the WAL
and the file; at SQLite's default of 1,000 pages every batch of a rebuild paid for one,
a fifth of the rebuild's time."""


def checked_tracking(
    application_name: str, positions: Sequence[int], single_row: bool
) -> list[Tracking]:
    """The tracking records a batch must insert to fail exactly when inserting each would.

    A single-row tracking table takes a record only past the one it holds, so a batch of
    increasing positions fails on its first record or not at all: its first and last
    records check the same, without a statement (or a record) per event.
    """
    if single_row and len(positions) > 2:
        positions = [positions[0], positions[-1]]
    return [Tracking(application_name, position) for position in positions]


def in_runs(statements: Sequence[Statement]) -> list[tuple[str, list[Sequence[Any]]]]:
    """A batch's statements as runs of one SQL each, for ``executemany``.

    Each table's statements keep their order; tables may interleave any way, because no
    view statement reads another table. A table's consecutive statements with the same SQL
    form one run, so a rebuild's batch is a few dozen calls instead of a call per row.
    """
    by_table: dict[str, list[tuple[str, list[Sequence[Any]]]]] = {}
    for sql, params in statements:
        runs = by_table.setdefault(table_of(sql), [])
        if runs and runs[-1][0] == sql:
            runs[-1][1].append(params)
        else:
            runs.append((sql, [params]))
    return [run for runs in by_table.values() for run in runs]


@cache
def table_of(sql: str) -> str:
    """The table an ``INSERT INTO t ...`` or ``UPDATE t ...`` writes."""
    words = sql.split(maxsplit=3)
    return words[2] if words[0] == "INSERT" else words[1]


class ViewsConnectionPool(SQLiteConnectionPool):
    """eventsourcing's SQLite pool keeps one prepared statement per connection
    (``cached_statements=True``), so each of a batch's alternating view statements was
    parsed again (a third of the rate); the views' connections keep them all. ``synchronous
    = NORMAL`` (in WAL mode) may lose the last commits to a power cut but never splits one:
    the views and their tracking roll back together, and the runner applies those events
    again."""

    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()  # the library's: WAL mode, row factory
        connection._sqlite_conn.close()
        raw = sqlite3.connect(
            self.db_name,
            uri=True,
            check_same_thread=False,
            isolation_level=None,
            cached_statements=STATEMENT_CACHE,
            timeout=self.lock_timeout or 5,
        )
        raw.row_factory = sqlite3.Row
        raw.execute("PRAGMA synchronous=NORMAL")
        raw.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
        connection._sqlite_conn = raw
        return connection


class SQLiteViews(SQLiteTrackingRecorder):
    def __init__(self, datastore: SQLiteDatastore, **kwargs: Any) -> None:
        if type(datastore.pool) is SQLiteConnectionPool:
            datastore.pool.__class__ = ViewsConnectionPool
        super().__init__(datastore, **kwargs)

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), *TABLES, *INDEXES]

    def apply(self, statements: Sequence[Statement], tracking: Tracking) -> None:
        self.apply_batch(statements, tracking.application_name, [tracking.notification_id])

    def apply_batch(
        self, statements: Sequence[Statement], application_name: str, positions: Sequence[int]
    ) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            for sql, rows in in_runs(statements):
                cursor.executemany(sql, rows)
            single_row = self.datastore.single_row_tracking
            for record in checked_tracking(application_name, positions, single_row):
                self._insert_tracking(cursor, record)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(sql, params)
            return [dict(row) for row in cursor.fetchall()]  # rows are sqlite3.Row

    def execute(self, sql: str) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(sql)


class PostgresViews(PostgresTrackingRecorder):
    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **{**kwargs, "tracking_table_name": "cc_view_tracking"})
        schema = self.datastore.schema
        self.sql_create_statements.extend(
            SQL(sql.replace("EXISTS cc_", f"EXISTS {schema}.cc_"))
            for sql in TABLES  # type: ignore[arg-type]
        )
        self.sql_create_statements.extend(
            SQL(sql.replace(" ON cc_", f" ON {schema}.cc_"))
            for sql in INDEXES  # type: ignore[arg-type]
        )

    def apply(self, statements: Sequence[Statement], tracking: Tracking) -> None:
        self.apply_batch(statements, tracking.application_name, [tracking.notification_id])

    def apply_batch(
        self, statements: Sequence[Statement], application_name: str, positions: Sequence[int]
    ) -> None:
        # Pipelined: a batch's statements go to the server without a round trip each. The
        # tracking insert comes after the pipeline ends: it fetches its result, and fetched
        # inside the pipeline it stalled about half the rebuilds of 100,000 events for 3-4 s
        # in one batch (the server waiting on the client, ``ClientRead``), 7,000 events/s
        # instead of 33,000.
        with self.datastore.transaction(commit=True) as cursor:
            with cursor.connection.pipeline():
                cursor.execute(f"SET LOCAL search_path TO {self.datastore.schema}")
                for sql, rows in in_runs(statements):
                    cursor.executemany(sql.replace("?", "%s"), rows)
            single_row = self.datastore.single_row_tracking
            for record in checked_tracking(application_name, positions, single_row):
                self._insert_tracking(cursor, record)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(f"SET LOCAL search_path TO {self.datastore.schema}")
            cursor.execute(sql.replace("?", "%s"), params)
            return [dict(row) for row in cursor.fetchall()]

    def execute(self, sql: str) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(f"SET LOCAL search_path TO {self.datastore.schema}")
            cursor.execute(sql)
