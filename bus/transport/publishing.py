"""JetStream publishes sent back to back, each acknowledgement matched on one subscription.

A publisher that waits for each acknowledgement before the next send pays a round trip
(and the server's fsync) per message; this one sends a batch at once and waits for all
its acknowledgements together, as JetStream's asynchronous publish does in other clients.
nats-py's own ``publish_async`` is not used: its reply handler raises a refusal instead of
setting it on the publish's future, so a publish the stream refuses would never complete.

Messages for one stream can also go as an atomic batch (nats-server 2.12+, a stream with
``allow_atomic``): stored together or not at all, with one acknowledgement, and written
to disk together rather than one fsync each (``sync_interval: always``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any
from uuid import uuid4

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import MaxPayloadError, NoRespondersError
from nats.js.errors import APIError

NO_RESPONDERS = "503"
ATOMIC_DISABLED = 10174
"""JetStream's error code for an atomic batch sent to a stream without ``allow_atomic``."""

Outgoing = tuple[str, bytes, dict[str, str] | None]
"""A subject, a payload and its headers."""


class NotAtomic(Exception):
    """A server before 2.12 ignores the batch headers and stores each message on its own,
    acknowledging only the last: the others' outcomes are unknown until they are sent again
    (their ids make the repeats duplicates)."""


def takes_no_batches(refusal: BaseException) -> bool:
    """Whether an atomic batch was refused for being one: the stream does not allow them,
    or the server does not know them (:class:`NotAtomic`)."""
    return isinstance(refusal, NotAtomic) or (
        isinstance(refusal, APIError) and refusal.err_code == ATOMIC_DISABLED
    )


def api_error(error: dict[str, object]) -> APIError:
    """The exception nats-py raises for a JetStream error reply, as a value."""
    try:
        APIError.from_error(error)
    except APIError as raised:
        return raised
    raise AssertionError("unreachable: from_error always raises")


class BulkPublisher:
    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self._prefix = ""
        self._subscription: Subscription | None = None
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> asyncio.Future[dict[str, Any]]:
        """Send one message; the future completes with its acknowledgement or refusal."""
        if self._subscription is None:
            self._prefix = self.nc.new_inbox()
            self._subscription = await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_reply)
        token = str(next(self._tokens))
        acknowledged = self._waiting[token] = asyncio.get_running_loop().create_future()
        acknowledged.add_done_callback(lambda _: self._waiting.pop(token, None))
        try:
            reply = f"{self._prefix}.{token}"
            await self.nc.publish(subject, payload, reply=reply, headers=headers)
        except BaseException:
            acknowledged.cancel()
            raise
        return acknowledged

    async def _on_reply(self, msg: Msg) -> None:
        acknowledged = self._waiting.get(msg.subject.rsplit(".", 1)[-1])
        if acknowledged is None or acknowledged.done():
            return  # a publish given up on (its batch timed out)
        if msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            # No stream (or, in a cluster, no stream leader yet): "nobody answered yet",
            # which callers treat as transient and ask again.
            acknowledged.set_exception(NoRespondersError())
            return
        reply = json.loads(msg.data)
        if "error" in reply:
            acknowledged.set_exception(api_error(reply["error"]))
        else:
            acknowledged.set_result(reply)

    async def publish_atomic(
        self, messages: list[Outgoing], timeout: float
    ) -> BaseException | None:
        """Send ``messages``, all for one stream, as one atomic batch; None once it is stored,
        or why the stream refused it (then none of it is stored).

        Only the commit (the last message) asks for an acknowledgement. A message the
        client cannot send (larger than the server takes) abandons the batch, which the
        server drops after its timeout. An acknowledgement that does not count the batch
        is a server that stored each message on its own (:class:`NotAtomic`).
        """
        batch = uuid4().hex
        *leading, (subject, payload, headers) = messages
        try:
            for sequence, (each, data, extra) in enumerate(leading, 1):
                marks = {"Nats-Batch-Id": batch, "Nats-Batch-Sequence": str(sequence)}
                await self.nc.publish(each, data, headers={**(extra or {}), **marks})
            commit = {
                "Nats-Batch-Id": batch,
                "Nats-Batch-Sequence": str(len(messages)),
                "Nats-Batch-Commit": "1",
            }
            acknowledged = await self.publish(subject, payload, {**(headers or {}), **commit})
        except MaxPayloadError as error:
            return error
        try:
            ack = await asyncio.wait_for(asyncio.shield(acknowledged), timeout)
        except TimeoutError:
            acknowledged.cancel()
            raise TimeoutError("an atomic batch was not acknowledged") from None
        except Exception as error:
            return error
        if ack.get("batch") != batch or ack.get("count") != len(messages):
            return NotAtomic(f"the server stored the batch's {len(messages)} messages singly")
        return None

    async def publish_all(
        self, messages: list[Outgoing], timeout: float
    ) -> list[BaseException | None]:
        """Send every message, then wait for all their acknowledgements together.

        Each result is None or why that publish failed (a message larger than the server
        takes fails before it leaves); no acknowledgement within ``timeout`` fails the whole
        call, and no publish given up on is left waiting.
        """
        pending: list[asyncio.Future[dict[str, Any]] | BaseException] = []
        try:
            for subject, payload, headers in messages:
                try:
                    pending.append(await self.publish(subject, payload, headers))
                except MaxPayloadError as error:
                    pending.append(error)
            acks = [p for p in pending if isinstance(p, asyncio.Future)]
            if acks and (late := (await asyncio.wait(acks, timeout=timeout))[1]):
                raise TimeoutError(f"{len(late)} publishes were not acknowledged")
        finally:
            for sent in pending:
                if isinstance(sent, asyncio.Future) and not sent.done():
                    sent.cancel()
        return [p if isinstance(p, BaseException) else p.exception() for p in pending]
