"""The ``send_email`` example tool: one email over SMTP, its Message-ID derived from the
idempotency key so that a receiver can recognise a retry."""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
from email.message import EmailMessage

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from bus.runtime.catalogue import Call, ToolFailure, tool
from bus.settings import Settings

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


@tool(
    name="send_email",
    resource="mailto:{to}",
    facts={"recipient": "to", "subject": "subject"},
    idempotency="key",
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
