"""The ``create_ticket`` example tool: a row in a SQLite ticket table whose unique idempotency
key makes a retry a no-op, and lets a call with an unknown outcome be reconciled exactly."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from bus.runtime.catalogue import Call, tool

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tickets (id INTEGER PRIMARY KEY, "
    "idempotency_key TEXT UNIQUE, customer TEXT, title TEXT, severity TEXT, "
    "created_at TEXT DEFAULT CURRENT_TIMESTAMP)"
)


class Ticket(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer: str = Field(min_length=1)
    title: str = Field(min_length=1, max_length=200)
    severity: Literal["low", "medium", "high", "critical"]


class Filed(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    ticket_id: str = Field(description="The ticket's id, T-<n>.")


def _database(call: Call) -> sqlite3.Connection:
    path = Path(call.settings.tickets_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute(SCHEMA)
    return db


def _find(call: Call) -> Filed | None:
    with _database(call) as db:
        row = db.execute(
            "SELECT id FROM tickets WHERE idempotency_key = ?", (call.idempotency_key,)
        ).fetchone()
    return Filed(ticket_id=f"T-{row[0]}") if row else None


def _insert(ticket: Ticket, call: Call) -> Filed:
    with _database(call) as db:
        # UNIQUE(idempotency_key) makes the insert itself idempotent.
        db.execute(
            "INSERT OR IGNORE INTO tickets (idempotency_key, customer, title, severity) "
            "VALUES (?, ?, ?, ?)",
            (call.idempotency_key, ticket.customer, ticket.title, ticket.severity),
        )
    found = _find(call)
    assert found is not None, "the row was just inserted"
    return found


async def find_ticket(ticket: Ticket, call: Call) -> Filed | None:
    """The ticket an earlier attempt with this key filed, if it did."""
    return await asyncio.to_thread(_find, call)


@tool(
    name="create_ticket",
    resource="ticket:{customer}",
    facts=["customer", "title", "severity", "ticketId"],
    idempotency="key",
    reconcile=find_ticket,
)
async def create_ticket(ticket: Ticket, call: Call) -> Filed:
    """File a support ticket for a customer."""
    return await asyncio.to_thread(_insert, ticket, call)
