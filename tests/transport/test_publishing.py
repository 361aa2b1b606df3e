"""BulkPublisher on a real nats-server: every publish ends, stored or refused, none left waiting.

nats-py's own ``publish_async`` leaves a refused publish pending for ever; the relay and the
artifact store depend on each publish of a batch completing one way or the other.
"""

from __future__ import annotations

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError, NoRespondersError
from nats.js.api import StreamConfig
from nats.js.errors import APIError

from bus.ledger.relay import ATOMIC_FROM, publish_batched
from bus.transport.publishing import ATOMIC_DISABLED, BulkPublisher, NotAtomic
from bus.transport.server import EmbeddedNats


async def test_stored_refused_and_too_large_publishes_each_end(nats_server: EmbeddedNats) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        await nc.jetstream().add_stream(
            StreamConfig(name="ONLY", subjects=["only.>"], max_msg_size=100)
        )
        publisher = BulkPublisher(nc)
        results = await publisher.publish_all(
            [
                ("only.a", b"stored", {"Nats-Msg-Id": "a"}),
                ("only.b", b"x" * 200, None),  # larger than the stream takes: refused
                ("nowhere.c", b"no stream listens", None),
                ("only.d", b"x" * (nc.max_payload + 1), None),  # larger than the server's
                ("only.a", b"stored", {"Nats-Msg-Id": "a"}),  # a duplicate is stored once
            ],
            timeout=5,
        )
        assert results[0] is None and results[4] is None
        assert isinstance(results[1], APIError)
        assert isinstance(results[2], NoRespondersError)  # transient: asked again
        assert isinstance(results[3], MaxPayloadError)
        assert publisher._waiting == {}  # nothing left waiting for an answer
        assert (await nc.jetstream().stream_info("ONLY")).state.messages == 1
    finally:
        await nc.close()


def headers(key: str) -> dict[str, str]:
    return {"Nats-Msg-Id": key}


async def atomic_and_plain_streams(nc: Client) -> BulkPublisher:
    """A stream that takes atomic batches (``atom.>``) and one that does not (``plain.>``)."""
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="ATOM", subjects=["atom.>"], allow_atomic=True))
    await js.add_stream(StreamConfig(name="PLAIN", subjects=["plain.>"]))
    return BulkPublisher(nc)


async def test_an_atomic_batch_is_stored_whole_or_not_at_all(nats_server: EmbeddedNats) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        publisher = await atomic_and_plain_streams(nc)
        batch = [(f"atom.{i}", b"event", headers(f"m{i}")) for i in range(5)]
        assert await publisher.publish_atomic(batch, timeout=5) is None
        assert (await js.stream_info("ATOM")).state.messages == 5
        again = await publisher.publish_atomic(batch, timeout=5)  # a republish after a crash
        assert isinstance(again, APIError)  # refused whole: its ids are duplicates
        too_large = [("atom.x", b"new", None), ("atom.y", b"x" * (nc.max_payload + 1), None)]
        assert isinstance(await publisher.publish_atomic(too_large, timeout=5), MaxPayloadError)
        plain = [(f"plain.{i}", b"event", None) for i in range(3)]
        refused = await publisher.publish_atomic(plain, timeout=5)
        assert isinstance(refused, APIError) and refused.err_code == ATOMIC_DISABLED
        assert (await js.stream_info("ATOM")).state.messages == 5  # nothing half-stored
        assert (await js.stream_info("PLAIN")).state.messages == 0
        assert publisher._waiting == {}
    finally:
        await nc.close()


async def test_the_relays_batches_fall_back_to_one_by_one_and_lose_nothing(
    nats_server: EmbeddedNats,
) -> None:
    """Each stream's messages go as a batch; a batch refused whole (duplicates after a
    republish, a stream without atomic batches, a message too large) is sent one by one,
    each message with its own outcome."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        publisher = await atomic_and_plain_streams(nc)
        first = [(f"atom.{i}", headers(f"a{i}"), b"event") for i in range(ATOMIC_FROM)]
        first += [(f"plain.{i}", headers(f"p{i}"), b"event") for i in range(ATOMIC_FROM)]
        singly: set[str] = set()
        assert await publish_batched(publisher, first, stream_of, singly) == [None] * 32
        assert singly == {"plain"}  # from now on sent one by one, with no batch tried first
        oversized = ("atom.big", headers("big"), b"x" * (nc.max_payload + 1))
        second = [*first[2:ATOMIC_FROM], ("atom.new", headers("new"), b"event"), oversized]
        second.append(("plain.new", headers("p-new"), b"event"))
        results = await publish_batched(publisher, second, stream_of, singly)
        assert results[:-2] == [None] * (ATOMIC_FROM - 1) and isinstance(
            results[-2], MaxPayloadError
        )
        assert results[-1] is None
        stored = (await js.stream_info("ATOM")).state.messages
        assert stored == ATOMIC_FROM + 1  # the first batch, then only the new one
        assert (await js.stream_info("PLAIN")).state.messages == ATOMIC_FROM + 1
        assert singly == {"plain"}  # a refusal of one message is no refusal of batches
    finally:
        await nc.close()


async def test_a_few_messages_for_a_stream_go_without_a_batch(nats_server: EmbeddedNats) -> None:
    """Below ``ATOMIC_FROM`` messages a batch costs the server more than it saves: no batch
    is tried, so a stream that takes none is not even found out."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        publisher = await atomic_and_plain_streams(nc)
        few = [(f"plain.{i}", headers(f"p{i}"), b"event") for i in range(ATOMIC_FROM - 1)]
        singly: set[str] = set()
        assert await publish_batched(publisher, few, stream_of, singly) == [None] * len(few)
        assert singly == set()
        assert (await js.stream_info("PLAIN")).state.messages == len(few)
    finally:
        await nc.close()


def stream_of(subject: str) -> str:
    return subject.split(".", 1)[0]


async def test_a_server_that_ignores_batches_is_not_taken_for_atomic(
    nats_server: EmbeddedNats,
) -> None:
    """A server before 2.12 stores a batch's messages one by one and acknowledges the
    commit like any publish: that is no proof the others were stored. Played here by a
    responder that answers as such a server does."""
    nc = await nats.connect(nats_server.url)
    try:
        stored: list[bytes] = []

        async def old_server(msg: Msg) -> None:
            stored.append(msg.data)
            if msg.reply:
                await msg.respond(b'{"stream": "OLD", "seq": %d}' % len(stored))

        await nc.subscribe("old.>", cb=old_server)
        batch = [(f"old.{i}", b"event", headers(f"o{i}")) for i in range(3)]
        assert isinstance(await BulkPublisher(nc).publish_atomic(batch, timeout=5), NotAtomic)
    finally:
        await nc.close()
