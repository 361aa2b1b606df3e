"""Materialised views on SQLite or PostgreSQL, each an eventsourcing tracking recorder.

A view's rows and its tracking record commit in one transaction, so each event
is applied exactly once: applying an event again fails on the tracking record
and rolls back. The SQL is portable between the two backends; PostgreSQL
places the tables in the ledger's schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteDatastore, SQLiteTrackingRecorder
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

    def apply_batch(self, statements: Sequence[Statement], tracking: Sequence[Tracking]) -> None:
        """Many events' statements and tracking records in one transaction."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def max_tracking_id(self, application_name: str) -> int | None: ...

    def execute(self, sql: str) -> None: ...


class SQLiteViews(SQLiteTrackingRecorder):
    def __init__(self, datastore: SQLiteDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), *TABLES, *INDEXES]

    def apply(self, statements: Sequence[Statement], tracking: Tracking) -> None:
        self.apply_batch(statements, [tracking])

    def apply_batch(self, statements: Sequence[Statement], tracking: Sequence[Tracking]) -> None:
        """Commit without waiting for the disk (WAL with ``synchronous=NORMAL``): a view is
        derived, and one lost to a power cut loses its tracking in the same transaction, so
        the runner applies those events again. The ledger's own commits stay synchronous."""
        with self.datastore.get_connection(commit=True) as connection:
            with connection.cursor() as pragma:  # not inside a transaction: SQLite refuses
                pragma.execute("PRAGMA synchronous=NORMAL")
            with connection.transaction(commit=True) as cursor:
                for sql, params in statements:
                    cursor.execute(sql, params)
                for record in tracking:
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
        self.apply_batch(statements, [tracking])

    def apply_batch(self, statements: Sequence[Statement], tracking: Sequence[Tracking]) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(f"SET LOCAL search_path TO {self.datastore.schema}")
            for sql, params in statements:
                cursor.execute(sql.replace("?", "%s"), params)
            for record in tracking:
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
