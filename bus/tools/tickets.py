"""The ``create_ticket`` example tool: a row in a SQLite ticket table whose unique idempotency
key makes a retry a no-op, and lets a call with an unknown outcome be reconciled exactly."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import ClassVar, Literal

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


class TicketStore:
    """One SQLite connection per ticket file and process (WAL), its writes in turn: a
    connection per call made concurrent calls wait on SQLite's lock in sleeps of up to
    100 ms each (the tool host's threads spent most of their time there)."""

    _open: ClassVar[dict[Path, TicketStore]] = {}
    _named: ClassVar[dict[Path, TicketStore]] = {}
    """The stores by the absolute path settings name: resolving links took 5% of a busy
    tool host's time, a system call per part of the path on every call."""
    _opening = threading.Lock()

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")  # other tool hosts' reads never block
        self.db.execute(SCHEMA)
        self.lock = threading.Lock()

    @classmethod
    def of(cls, call: Call) -> TicketStore:
        named = call.settings.tickets_path().absolute()
        store = cls._named.get(named)
        if store is not None:
            return store
        path = named.resolve()  # two spellings of one file share its connection
        with cls._opening:
            if path not in cls._open:
                cls._open[path] = cls(path)
            store = cls._named[named] = cls._open[path]
        return store

    def find(self, idempotency_key: str) -> Filed | None:
        with self.lock:
            row = self.db.execute(
                "SELECT id FROM tickets WHERE idempotency_key = ?", (idempotency_key,)
            ).fetchone()
        return Filed(ticket_id=f"T-{row[0]}") if row else None

    def insert(self, ticket: Ticket, idempotency_key: str) -> Filed:
        with self.lock, self.db:  # one transaction, committed on leaving
            # UNIQUE(idempotency_key) makes the insert itself idempotent.
            self.db.execute(
                "INSERT OR IGNORE INTO tickets (idempotency_key, customer, title, severity) "
                "VALUES (?, ?, ?, ?)",
                (idempotency_key, ticket.customer, ticket.title, ticket.severity),
            )
            (ticket_id,) = self.db.execute(
                "SELECT id FROM tickets WHERE idempotency_key = ?", (idempotency_key,)
            ).fetchone()
        return Filed(ticket_id=f"T-{ticket_id}")


async def find_ticket(ticket: Ticket, call: Call) -> Filed | None:
    """The ticket an earlier attempt with this key filed, if it did."""
    return await asyncio.to_thread(TicketStore.of(call).find, call.idempotency_key)


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
    return await asyncio.to_thread(TicketStore.of(call).insert, ticket, call.idempotency_key)
