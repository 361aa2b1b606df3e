"""The ``create_ticket`` example tool: a row in a SQLite ticket table whose unique idempotency
key makes a retry a no-op, and lets a call with an unknown outcome be reconciled exactly."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from bus.runtime.catalogue import Call, CannotConfirm, differences, tool
from bus.settings import Settings
from handoff_schemas import Evidence

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


async def confirm_filed(evidence: Evidence, settings: Settings) -> list[str]:
    """The ticket with the recorded id, in the ticket store, with the recorded facts."""
    ticket_id = evidence.refs.get("ticketId", "")
    found = await asyncio.to_thread(stored_ticket, settings, ticket_id)
    if found is None:
        return [f"ticket {ticket_id} is not in the ticket store"]
    facts = {"customer": "customer", "title": "title", "severity": "severity"}
    return differences(evidence.facts, found, facts)


def stored_ticket(settings: Settings, ticket_id: str) -> dict[str, str] | None:
    """The ticket as the store holds it, read-only (asking must not create the store)."""
    path = Path(settings.tickets_path())
    if not path.exists():
        raise CannotConfirm(f"no ticket store at {path}")
    number = ticket_id.removeprefix("T-")
    if not number.isdigit():
        return None
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        row = db.execute(
            "SELECT customer, title, severity FROM tickets WHERE id = ?", (int(number),)
        ).fetchone()
    return None if row is None else dict(row)


@tool(
    name="create_ticket",
    resource="ticket:{customer}",
    facts=["customer", "title", "severity", "ticketId"],
    idempotency="key",
    reconcile=find_ticket,
    confirm=confirm_filed,
)
async def create_ticket(ticket: Ticket, call: Call) -> Filed:
    """File a support ticket for a customer."""
    return await asyncio.to_thread(_insert, ticket, call)
