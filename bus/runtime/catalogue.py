"""The tool catalogue: each tool's payload schema, the resource it touches, and its side effect.

The runtime uses a tool's payload model and :meth:`Tool.resource` to validate a
call and to ask the policy about the real target (the address an email goes to
is read from the payload, never taken from the agent's word). Only a tool host
calls :meth:`Tool.run`, the one place a side effect happens.
"""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import sqlite3
import threading
from abc import ABC, abstractmethod
from email.message import EmailMessage
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from bus.settings import Settings


class ToolFailure(Exception):
    """A side effect that did not happen; ``transient`` says whether a retry may help."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SendEmailPayload(Payload):
    to: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", description="Recipient address.")
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1)


class CreateTicketPayload(Payload):
    customer: str = Field(min_length=1)
    title: str = Field(min_length=1, max_length=200)
    severity: Literal["low", "medium", "high", "critical"]


class Tool(ABC):
    name: ClassVar[str]
    payload: ClassVar[type[Payload]]
    input_facts: ClassVar[dict[str, str]] = {}
    """Fact name -> payload field: what the call asked for that a claim may assert."""
    output_facts: ClassVar[dict[str, str]] = {}
    """Fact name -> key of the tool's refs: what the call produced that a claim may assert."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @classmethod
    def facts(cls, payload: dict[str, Any], refs: dict[str, str]) -> dict[str, Any]:
        """The declared facts of one call, as the runtime saw them (never the agent's word).

        Read from the raw payload the runtime validated and the refs the tool host
        returned; a fact absent from either (a failed call has no ``ticketId``) is left
        out rather than recorded empty, so a claim asserting it is unsupported.
        """
        found = {name: payload[key] for name, key in cls.input_facts.items() if key in payload}
        found.update({name: refs[key] for name, key in cls.output_facts.items() if key in refs})
        return found

    @staticmethod
    @abstractmethod
    def resource(payload: Any) -> str:
        """What the call touches, as the policy sees it."""

    @abstractmethod
    async def run(self, payload: Any, idempotency_key: str) -> dict[str, str]:
        """Perform the side effect once; return the tool's references (ids)."""


class SendEmail(Tool):
    name = "send_email"
    payload = SendEmailPayload
    input_facts = {"recipient": "to", "subject": "subject"}
    sender = "claimcheck@acme.example"

    @staticmethod
    def resource(payload: SendEmailPayload) -> str:
        return f"mailto:{payload.to}"

    async def run(self, payload: SendEmailPayload, idempotency_key: str) -> dict[str, str]:
        # The Message-ID derives from the idempotency key, so even a duplicate
        # that slipped through would be recognisable downstream.
        message_id = f"<{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}@claimcheck>"
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = payload.to
        message["Subject"] = payload.subject
        message["Message-ID"] = message_id
        message.set_content(payload.body)
        try:
            await asyncio.to_thread(self._deliver, message)
        except (OSError, smtplib.SMTPException) as error:
            transient = not isinstance(error, smtplib.SMTPRecipientsRefused)
            raise ToolFailure(f"SMTP delivery failed: {error}", transient) from None
        return {"messageId": message_id}

    def _deliver(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.settings.smtp_host, self.settings.smtp_port, timeout=10) as smtp:
            smtp.send_message(message)


class CreateTicket(Tool):
    name = "create_ticket"
    payload = CreateTicketPayload
    input_facts = {"customer": "customer", "title": "title", "severity": "severity"}
    output_facts = {"ticketId": "ticketId"}

    @staticmethod
    def resource(payload: CreateTicketPayload) -> str:
        return f"ticket:{payload.customer}"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        # One connection per tool host, its writes in turn: a connection per call made
        # concurrent calls wait on SQLite's lock in sleeps of up to 100 ms each.
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    async def run(self, payload: CreateTicketPayload, idempotency_key: str) -> dict[str, str]:
        ticket_id = await asyncio.to_thread(self._insert, payload, idempotency_key)
        return {"ticketId": ticket_id}

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            path = Path(self.settings.tickets_path())
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=30, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")  # other tool hosts' reads never block
            db.execute(
                "CREATE TABLE IF NOT EXISTS tickets (id INTEGER PRIMARY KEY, "
                "idempotency_key TEXT UNIQUE, customer TEXT, title TEXT, severity TEXT, "
                "created_at TEXT DEFAULT CURRENT_TIMESTAMP)"
            )
            self._db = db
        return self._db

    def _insert(self, payload: CreateTicketPayload, idempotency_key: str) -> str:
        with self._lock:
            db = self._connection()
            with db:  # one transaction, committed on leaving
                # UNIQUE(idempotency_key) makes the insert itself idempotent.
                db.execute(
                    "INSERT OR IGNORE INTO tickets (idempotency_key, customer, title, severity) "
                    "VALUES (?, ?, ?, ?)",
                    (idempotency_key, payload.customer, payload.title, payload.severity),
                )
                (ticket_id,) = db.execute(
                    "SELECT id FROM tickets WHERE idempotency_key = ?", (idempotency_key,)
                ).fetchone()
        return f"T-{ticket_id}"


CATALOGUE: dict[str, type[Tool]] = {tool.name: tool for tool in (SendEmail, CreateTicket)}
