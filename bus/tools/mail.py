"""The ``send_email`` example tool: one email over SMTP, its Message-ID derived from the
idempotency key so that a receiver can recognise a retry."""

from __future__ import annotations

import asyncio
import hashlib
import mailbox
import smtplib
from email.message import EmailMessage

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from bus.runtime.catalogue import Call, CannotConfirm, ToolFailure, differences, tool
from bus.settings import Settings
from handoff_schemas import Evidence

SENDER = "claimcheck@acme.example"


class Email(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", description="Recipient address.")
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1)


class Sent(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    message_id: str = Field(description="The Message-ID the email was sent with.")


def message_id(idempotency_key: str) -> str:
    """The same key gives the same Message-ID: a duplicate is recognisable downstream."""
    return f"<{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}@claimcheck>"


async def confirm_sent(evidence: Evidence, settings: Settings) -> list[str]:
    """The message with the recorded Message-ID, in the Maildir the mail server delivers to
    (``CLAIMCHECK_MAILDIR``), with the recorded recipient and subject."""
    message_id = evidence.refs.get("messageId", "")
    found = await asyncio.to_thread(find_message, settings, message_id)
    if found is None:
        return [f"no message {message_id} at the mail server"]
    return differences(evidence.facts, found, {"recipient": "To", "subject": "Subject"})


def find_message(settings: Settings, message_id: str) -> dict[str, str] | None:
    path = settings.maildir_path()
    if not (path / "cur").is_dir():
        raise CannotConfirm(f"no Maildir at {path}: the mail server's store is not readable")
    for message in mailbox.Maildir(path, create=False).values():
        if message["Message-ID"] == message_id:
            return {"To": message["To"], "Subject": message["Subject"]}
    return None


@tool(
    name="send_email",
    resource="mailto:{to}",
    facts={"recipient": "to", "subject": "subject"},
    idempotency="key",
    confirm=confirm_sent,
)
async def send_email(email: Email, call: Call) -> Sent:
    """Send one email through the deployment's SMTP server."""
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = email.to
    message["Subject"] = email.subject
    message["Message-ID"] = message_id(call.idempotency_key)
    message.set_content(email.body)
    try:
        await asyncio.to_thread(deliver, call.settings, message)
    except (OSError, smtplib.SMTPException) as error:
        transient = not isinstance(error, smtplib.SMTPRecipientsRefused)
        raise ToolFailure(f"SMTP delivery failed: {error}", transient) from None
    return Sent(message_id=message["Message-ID"])


def deliver(settings: Settings, message: EmailMessage) -> None:
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=10) as smtp:
        smtp.send_message(message)
