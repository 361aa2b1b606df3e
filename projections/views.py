"""Materialised views on SQLite or PostgreSQL, each an eventsourcing tracking recorder.

A view's rows and its tracking record commit in one transaction, so each event
is applied exactly once: applying an event again fails on the tracking record
and rolls back. The SQL is portable between the two backends; PostgreSQL
places the tables in the ledger's schema, and applies a batch as a few set-based
statements (:func:`set_based`).
"""

from __future__ import annotations

import re
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from functools import cache
from typing import Any, NamedTuple, Protocol

import msgspec
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


class ViewsBusy(Exception):
    """Another runner is applying to these views, or has applied past this batch: the
    batch is left to it, and nothing of it was written."""


class ViewStore(Protocol):
    """What a projection needs from a view, whatever the backend."""

    prepares_while_applying: bool
    """Whether a runner should prepare the next batch while this store applies one: yes
    where a server does the applying, no where the applying is this process's own work."""

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


def primary_key(create_table: str) -> tuple[str, ...]:
    """The key columns a ``CREATE TABLE`` of ``TABLES`` names."""
    found = re.search(r"PRIMARY KEY \(([^)]*)\)|(\w+) TEXT PRIMARY KEY", create_table)
    assert found is not None, create_table
    return tuple((found.group(1) or found.group(2)).split(", "))


COLUMN_TYPES = {
    sql.split()[5]: dict(re.findall(r"(\w+) (TEXT|DOUBLE PRECISION|BIGINT|INTEGER)", sql))
    for sql in TABLES
}
"""Each view table's columns and their SQL types, as ``TABLES`` creates them."""
ROW_KEYS = {sql.split()[5]: primary_key(sql) for sql in TABLES}
"""Each view table's primary key: every view statement writes the one row it names."""


class SetStatement(NamedTuple):
    """One view statement's SQL made to apply many rows' parameters at once."""

    table: str
    key: tuple[int, ...]
    """Where the row's primary key sits among the statement's parameters."""
    sql: str
    """The statement over ``jsonb_array_elements`` of a JSON array of parameter rows."""


def set_based(statements: Sequence[Statement]) -> list[tuple[str, str]]:
    """A batch's statements as a few set-based ones, each with its rows as one JSON text.

    psycopg's work for each statement of a pipeline (about 20 us) bounded a PostgreSQL
    rebuild: 5,830 statements per 5,000 events. Each view statement writes one row, named
    by its primary key, and reads no other, so statements on different rows commute while
    those on one row must keep their order: the k-th statement on each row goes into layer
    k, applied after layer k - 1, and a layer's statements with the same SQL become one.
    A layer names each row at most once, as a multi-row ``ON CONFLICT`` or ``UPDATE ...
    FROM`` needs, and every row sees the same changes in the same order as before, so the
    sums of its costs are the same to the last bit (JSON, and ``jsonb``'s decimal, carry a
    finite float exactly, and the events were read from JSON, which holds no other).
    """
    layers: dict[tuple[str, int], dict[str, list[Sequence[Any]]]] = defaultdict(dict)
    changes: dict[tuple[Any, ...], int] = defaultdict(int)
    for sql, params in statements:
        planned = set_statement(sql)
        row = (planned.table, *(params[position] for position in planned.key))
        layer, changes[row] = changes[row], changes[row] + 1
        layers[(planned.table, layer)].setdefault(sql, []).append(params)
    return [
        (set_statement(sql).sql, msgspec.json.encode(rows).decode())
        for _, by_sql in sorted(layers.items())
        for sql, rows in by_sql.items()
    ]


ROWS = "FROM jsonb_array_elements(%s::jsonb) AS r"
"""A set-based statement's rows: one JSON array of parameter arrays, a single parameter,
parsed once as ``jsonb`` (as ``json``, each ``->>`` parsed its row's text again: a rebuild
of 1,000,800 events ran at 49,000-54,000 events/s against 58,000-60,000)."""


@cache
def set_statement(sql: str) -> SetStatement:
    """The set-based form of a view statement: ``INSERT INTO t (...) VALUES (...)``, with
    or without ``ON CONFLICT``, or ``UPDATE t SET c = ..., ... WHERE key = ? [AND ...]``
    naming the row by its primary key; any other shape raises ``ValueError``. Parameter
    ``i`` of a row becomes ``r->>i`` cast to its column's type."""
    table = table_of(sql)
    types = COLUMN_TYPES[table]
    bound: list[str] = []  # the column each parameter so far is for

    def parameter(column: str, expression: str) -> str:
        while "?" in expression:
            expression = expression.replace("?", f"(r->>{len(bound)})::{types[column]}", 1)
            bound.append(column)
        return expression

    if sql.startswith("INSERT"):
        head, rest = sql.split(" VALUES (", 1)
        values, tail = rest.split(")", 1)
        columns = head[head.index("(") + 1 : head.rindex(")")].split(", ")
        selected = [
            parameter(column, value)
            for column, value in zip(columns, values.split(", "), strict=True)
        ]
        key = tuple(bound.index(column) for column in ROW_KEYS[table])
        return SetStatement(table, key, f"{head} SELECT {', '.join(selected)} {ROWS}{tail}")
    assignments, condition = sql.split(" SET ", 1)[1].split(" WHERE ")
    assigned = [
        f"{column} = {parameter(column, value)}"
        for column, value in (part.split(" = ", 1) for part in assignments.split(", "))
    ]
    keys = [part.removesuffix(" = ?") for part in condition.split(" AND ")]
    if tuple(keys) != ROW_KEYS[table]:  # layering holds only for one row, named by its key
        raise ValueError(f"a view UPDATE must name its row by {ROW_KEYS[table]}: {sql}")
    matched = [f"{table}.{column} = {parameter(column, '?')}" for column in keys]
    key = tuple(range(len(bound) - len(keys), len(bound)))
    return SetStatement(
        table,
        key,
        f"UPDATE {table} SET {', '.join(assigned)} {ROWS} WHERE {' AND '.join(matched)}",
    )


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
    prepares_while_applying = False
    """SQLite applies in this process: a second thread reading meanwhile only took turns
    with it for the GIL (a rebuild of 100,000 events: 71,000-75,000 events/s alone,
    52,000-55,000 with the next batch prepared meanwhile)."""

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
    prepares_while_applying = True  # the server applies a batch while the runner reads on

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
        # Set-based and pipelined: a batch is a few statements, sent without a round trip
        # each. The tracking insert comes after the pipeline ends: it fetches its result,
        # and fetched inside the pipeline it stalled about half the rebuilds of 100,000
        # events for 3-4 s in one batch (the server waiting on the client, ``ClientRead``),
        # 7,000 events/s instead of 33,000.
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(f"SET LOCAL search_path TO {self.datastore.schema}")
            self._take_turn(cursor, application_name, positions[0])
            with cursor.connection.pipeline():
                for sql, rows in set_based(statements):
                    cursor.execute(sql, (rows,))
            single_row = self.datastore.single_row_tracking
            for record in checked_tracking(application_name, positions, single_row):
                self._insert_tracking(cursor, record)

    def _take_turn(self, cursor: Any, application_name: str, first: int) -> None:
        """Apply only while no other runner does, and only what none has applied.

        Every runtime replica runs a runner over the same views. Each applied every batch,
        and all but one rolled theirs back on the tracking records, then went through them
        one event at a time: with two runtimes, 2,000 rolled-back transactions in a bench
        run. A transaction-level advisory lock per views schema now gives one runner the
        turn; another, or one whose batch the views have passed, raises :class:`ViewsBusy`
        before writing anything, and leaves the work to the runner ahead of it.
        """
        cursor.execute(
            "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0)) AS turn, (SELECT "
            f"max(notification_id) FROM {self.tracking_table_name} WHERE application_name = %s) "
            "AS applied",
            (f"claimcheck views {self.datastore.schema}", application_name),
        )
        row = cursor.fetchone()
        turn, applied = row["turn"], row["applied"]
        if not turn or (applied or 0) >= first:
            raise ViewsBusy(f"another runner applies the views (at {applied}, batch from {first})")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(f"SET LOCAL search_path TO {self.datastore.schema}")
            cursor.execute(sql.replace("?", "%s"), params)
            return [dict(row) for row in cursor.fetchall()]

    def execute(self, sql: str) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(f"SET LOCAL search_path TO {self.datastore.schema}")
            cursor.execute(sql)
