"""The tool catalogue: each tool's payload schema, the resource it touches, and its side effect.

The runtime uses a tool's payload model and :meth:`Tool.resource` to validate a
call and to ask the policy about the real target (the address an email goes to
is read from the payload, never taken from the agent's word). Only a tool host
calls :meth:`Tool.run`, the one place a side effect happens. :meth:`Tool.confirm`
asks the tool's own system, after the fact, whether a recorded side effect exists as
recorded (``claimcheck verify --external``).
"""

from __future__ import annotations

import asyncio
import hashlib
import mailbox
import smtplib
import sqlite3
from abc import ABC, abstractmethod
from email.message import EmailMessage
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from bus.settings import Settings
from handoff_schemas import Evidence


class ToolFailure(Exception):
    """A side effect that did not happen; ``transient`` says whether a retry may help."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class CannotConfirm(Exception):
    """The tool cannot ask its system about a side effect (none configured, unreachable)."""


def differences(facts: dict[str, Any], found: dict[str, Any], fields: dict[str, str]) -> list[str]:
    """Each recorded fact the system shows otherwise (``fields``: fact -> the system's field)."""
    return [
        f"{fact} is {found.get(field)!r} in the system, {facts[fact]!r} in the evidence"
        for fact, field in fields.items()
        if fact in facts and found.get(field) != facts[fact]
    ]


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

    async def confirm(self, evidence: Evidence) -> list[str]:
        """Ask the tool's own system whether the side effect ``evidence`` records (a
        ``succeeded`` record: its ``refs`` and ``facts``) exists as recorded.

        Returns what differs (``[]``: it exists as recorded; a missing one is a
        difference too). Raises :class:`CannotConfirm` when the system cannot be asked;
        a tool without a way to ask keeps this default.
        """
        raise CannotConfirm(f"{self.name} has no way to ask its system")


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

    async def confirm(self, evidence: Evidence) -> list[str]:
        """The message with the recorded Message-ID, in the Maildir the mail server delivers
        to (``CLAIMCHECK_MAILDIR``), with the recorded recipient and subject."""
        message_id = evidence.refs.get("messageId", "")
        found = await asyncio.to_thread(self._find, message_id)
        if found is None:
            return [f"no message {message_id} at the mail server"]
        return differences(evidence.facts, found, {"recipient": "To", "subject": "Subject"})

    def _find(self, message_id: str) -> dict[str, str] | None:
        path = self.settings.maildir_path()
        if not (path / "cur").is_dir():
            raise CannotConfirm(f"no Maildir at {path}: the mail server's store is not readable")
        for message in mailbox.Maildir(path, create=False).values():
            if message["Message-ID"] == message_id:
                return {"To": message["To"], "Subject": message["Subject"]}
        return None


class CreateTicket(Tool):
    name = "create_ticket"
    payload = CreateTicketPayload
    input_facts = {"customer": "customer", "title": "title", "severity": "severity"}
    output_facts = {"ticketId": "ticketId"}

    @staticmethod
    def resource(payload: CreateTicketPayload) -> str:
        return f"ticket:{payload.customer}"

    async def run(self, payload: CreateTicketPayload, idempotency_key: str) -> dict[str, str]:
        ticket_id = await asyncio.to_thread(self._insert, payload, idempotency_key)
        return {"ticketId": ticket_id}

    async def confirm(self, evidence: Evidence) -> list[str]:
        """The ticket with the recorded id, in the ticket store, with the recorded facts."""
        ticket_id = evidence.refs.get("ticketId", "")
        found = await asyncio.to_thread(self._find, ticket_id)
        if found is None:
            return [f"ticket {ticket_id} is not in the ticket store"]
        return differences(evidence.facts, found, self.input_facts)

    def _find(self, ticket_id: str) -> dict[str, Any] | None:
        path = Path(self.settings.tickets_path())
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

    def _insert(self, payload: CreateTicketPayload, idempotency_key: str) -> str:
        path = Path(self.settings.tickets_path())
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS tickets (id INTEGER PRIMARY KEY, "
                "idempotency_key TEXT UNIQUE, customer TEXT, title TEXT, severity TEXT, "
                "created_at TEXT DEFAULT CURRENT_TIMESTAMP)"
            )
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
