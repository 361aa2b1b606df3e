"""The runtime's security log: requests refused because of who asked or how they asked.

A refusal that belongs to no workflow the caller takes part in (a reply subject that is
not the caller's own inbox, a rejected handoff aimed at someone else's workflow) must not
be written into anybody's workflow, or the refusal itself becomes the attack. It goes here
instead: a warning on the ``claimcheck.security`` logger and a message on
``<prefix>.security.<agent>``, which the security stream keeps. Only the runtime may
publish there.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from nats.aio.client import Client
from nats.errors import Error as NatsError

from bus.transport.auth import agent_role
from bus.transport.subjects import OPERATOR, Subjects
from handoff_schemas import encode

log = logging.getLogger("claimcheck.security")

MAX_DETAIL = 500
"""Characters of detail kept per entry: the log must not be a way to store big payloads."""


def inbox_prefix(agent: str) -> str:
    """The reply prefix the caller's credentials use (see :mod:`bus.transport.auth`)."""
    role = OPERATOR if agent == OPERATOR else agent_role(agent)
    return f"_INBOX_{role}."


def reply_allowed(agent: str, reply: str, authenticated: bool) -> bool:
    """May the runtime answer ``agent`` on ``reply``?

    Only on the caller's own inbox prefix: the runtime publishes with broad rights, so a
    reply subject the caller picks freely would let it write into the event, evidence or
    escalation streams, or into another agent's pending request. Without credentials
    (a development stack with no NATS users) clients share NATS's default ``_INBOX.``
    prefix, which is accepted there too.
    """
    if reply.startswith(inbox_prefix(agent)):
        return True
    return not authenticated and reply.startswith("_INBOX.")


class SecurityLog:
    def __init__(self, nc: Client, subjects: Subjects) -> None:
        self.nc = nc
        self.subjects = subjects

    async def record(self, agent: str, op: str, kind: str, detail: str) -> None:
        """Log one refusal, and publish it for whoever watches the security stream."""
        detail = detail[:MAX_DETAIL]
        log.warning("security: %s from %s on %s: %s", kind, agent, op, detail)
        entry = {
            "agent": agent,
            "op": op,
            "kind": kind,
            "detail": detail,
            "at": datetime.now(UTC).isoformat(),
        }
        try:
            await self.nc.publish(self.subjects.security(agent), encode(entry))
        except NatsError as error:  # the log line above is the record of last resort
            log.error("security entry not published: %s", error)
