"""Asking again across a NATS cluster's leader elections and a replica's death.

While a JetStream cluster elects a leader, or a runtime replica dies with a request in
hand, a request gets no answer (no responders, a timeout, a 503). Callers whose requests
are safe to repeat (a step key, a start's request id, content-addressed artifacts) ask
again with capped exponential backoff and full jitter, so that many clients retrying at
once do not arrive together, until their patience runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import ClassVar, TypeVar
from weakref import WeakKeyDictionary

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import ServiceUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT: tuple[type[BaseException], ...] = (
    NoRespondersError,
    NatsTimeout,
    TimeoutError,
    ConnectionClosedError,
    ServiceUnavailableError,
)
"""Errors that mean "nobody answered yet", never "the answer is no"."""

UNAVAILABLE = "unavailable"
"""The error code of a runtime reply meaning "NATS did not answer me": safe to ask again."""


class Unavailable(TimeoutError):
    """The runtime answered that NATS was unavailable to it; transient, like a timeout."""


def backoff(attempt: int, base: float = 0.1, cap: float = 2.0) -> float:
    """Full jitter: a random pause up to ``base * 2**attempt``, at most ``cap`` seconds."""
    return random.uniform(0, min(cap, base * 2**attempt))


async def retrying(
    call: Callable[[], Awaitable[T]],
    patience: float,
    what: str = "request",
    transient: tuple[type[BaseException], ...] = TRANSIENT,
) -> T:
    """``call()`` until it answers; a transient error after ``patience`` seconds is raised."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    attempt = 0
    while True:
        try:
            return await call()
        except transient as error:
            pause = backoff(attempt)
            if loop.time() + pause > deadline:
                raise
            log.info("%s not answered (%s); asking again", what, type(error).__name__)
            attempt += 1
            await asyncio.sleep(pause)


WORKING_HEADER = "Claimcheck-Working"
"""Header of the empty messages a runtime replica sends to a caller's inbox while it works."""

WORKING_INTERVAL = 1.0
"""Seconds between a replica's "still working" messages."""

SILENCE = 3.5
"""Seconds without an answer or a "still working" after which the replica is taken for dead."""


class Replies:
    """Every request's replies on one connection come to one wildcard inbox subscription,
    each to its own queue by the reply subject's last token, as nats-py's own ``request``
    does: a request may get several messages (a replica's "still working") before its answer.

    A subscription of its own per request cost each call a subscribe and an unsubscribe,
    and the server a change of interest (sent to every node of a cluster): at 200
    workflows in flight, a third of the bench agent's CPU. A connection's ``Replies`` holds
    no reference to the connection, so one its user drops is collected with its entry.
    """

    _of: ClassVar[WeakKeyDictionary[Client, Replies]] = WeakKeyDictionary()

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._subscribing = asyncio.Lock()
        self._subscribed = False
        self._tokens = itertools.count()
        self._queues: dict[str, asyncio.Queue[Msg]] = {}

    @classmethod
    @contextlib.asynccontextmanager
    async def inbox(cls, nc: Client) -> AsyncIterator[tuple[str, asyncio.Queue[Msg]]]:
        """A reply subject on ``nc`` of one request's own, and the queue its messages
        arrive on."""
        replies = cls._of.get(nc)
        if replies is None:
            replies = cls._of[nc] = cls(nc.new_inbox())
        if not replies._subscribed:  # once per connection; no lock on every request
            async with replies._subscribing:
                if not replies._subscribed:
                    await nc.subscribe(f"{replies.prefix}.*", cb=replies._route)
                    replies._subscribed = True
        token = str(next(replies._tokens))
        queue = replies._queues[token] = asyncio.Queue()
        try:
            yield f"{replies.prefix}.{token}", queue
        finally:
            del replies._queues[token]

    async def _route(self, msg: Msg) -> None:
        queue = self._queues.get(msg.subject.rsplit(".", 1)[-1])
        if queue is not None:  # else a late reply to a request given up on: dropped
            queue.put_nowait(msg)


async def request_while_working(
    nc: Client,
    subject: str,
    data: bytes,
    timeout: float,
    headers: dict[str, str] | None = None,
    silence: float = SILENCE,
) -> Msg:
    """A request that waits up to ``timeout`` for a replica that says it is working, but
    raises :class:`nats.errors.TimeoutError` after ``silence`` seconds of silence.

    The replica that took the request sends ``WORKING_HEADER`` messages while it works; a
    replica killed mid-request goes silent, and the caller asks again within seconds.
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    async with Replies.inbox(nc) as (inbox, replies):
        await nc.publish(subject, data, reply=inbox, headers=headers)
        while True:
            remaining = give_up - loop.time()
            if remaining <= 0:
                raise NatsTimeout
            try:
                msg = await asyncio.wait_for(replies.get(), min(silence, remaining))
            except TimeoutError:
                raise NatsTimeout from None
            if msg.headers and msg.headers.get(WORKING_HEADER):
                continue
            if msg.headers and msg.headers.get("Status") == "503" and not msg.data:
                raise NoRespondersError
            return msg
