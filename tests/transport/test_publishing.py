"""BulkPublisher on a real nats-server: every publish ends, stored or refused, none left waiting.

nats-py's own ``publish_async`` leaves a refused publish pending for ever; the relay and the
artifact store depend on each publish of a batch completing one way or the other.
"""

from __future__ import annotations

import nats
from nats.errors import MaxPayloadError, NoRespondersError
from nats.js.api import StreamConfig
from nats.js.errors import APIError

from bus.transport.publishing import BulkPublisher
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
