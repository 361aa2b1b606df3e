"""A local SMTP server (aiosmtpd) that keeps what it receives, for the demo and tests.

It is a real SMTP exchange: the email tool speaks SMTP to it over loopback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from bus.server import free_port


@dataclass
class Mailbox:
    port: int = field(default_factory=free_port)
    received: list[Message] = field(default_factory=list)
    _controller: Controller | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(message_from_bytes(envelope.original_content or b""))
        return "250 Message accepted for delivery"

    def start(self) -> None:
        """Serve on 127.0.0.1:port from aiosmtpd's own thread."""
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller:
            self._controller.stop()
