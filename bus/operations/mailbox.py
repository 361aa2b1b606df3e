"""A local SMTP server (aiosmtpd) that keeps what it receives, for the demo and tests.

It is a real SMTP exchange: the email tool speaks SMTP to it over loopback. With a
``maildir`` it also delivers each message there, as a mail server does, so the email
tool can be asked afterwards whether a message arrived (``verify --external``).
"""

from __future__ import annotations

import asyncio
import mailbox
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from bus.transport.server import free_port


@dataclass
class Mailbox:
    """``rcpt_delays``: seconds to stall each next RCPT, to hold a sender mid-exchange;
    ``maildir``: where each received message is delivered too (none: kept in memory only)."""

    port: int = field(default_factory=free_port)
    received: list[Message] = field(default_factory=list)
    rcpt_delays: list[float] = field(default_factory=list)
    rcpt_seen: threading.Event = field(default_factory=threading.Event)
    on_message: Callable[[Message], None] | None = None
    maildir: Path | None = None
    _controller: Controller | None = None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.rcpt_seen.set()
        if self.rcpt_delays:
            await asyncio.sleep(self.rcpt_delays.pop(0))
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        message = message_from_bytes(envelope.original_content or b"")
        if self.maildir is not None:
            await asyncio.to_thread(deliver, self.maildir, envelope.original_content or b"")
        self.received.append(message)
        if self.on_message:
            self.on_message(message)
        return "250 Message accepted for delivery"

    def start(self) -> None:
        """Serve on 127.0.0.1:port from aiosmtpd's own thread."""
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller:
            self._controller.stop()


def deliver(maildir: Path, content: bytes) -> None:
    """Deliver one message into ``maildir`` (created if need be), as a mail server would."""
    mailbox.Maildir(maildir, create=True).add(content)
