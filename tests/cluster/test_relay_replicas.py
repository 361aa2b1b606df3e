"""Relay replicas on a JetStream cluster: a 409 "duplicate message id is in process" is success.

Three real nats-server processes form a cluster and a stream has three replicas. Publishes
of one ``Nats-Msg-Id`` racing from three connections (one per node, as relay replicas of
one ledger do) make the cluster answer 409 to some; the relay's ``publish_all`` takes that answer as
the success it is, and the stream holds each id exactly once.
"""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.js.api import StreamConfig
from nats.js.errors import APIError, NoStreamResponseError

from bus.ledger.relay import is_duplicate_in_process, publish_all
from bus.transport.publishing import BulkPublisher
from bus.transport.server import EmbeddedNats

pytestmark = pytest.mark.timeout(120)

ROUNDS = 40


async def replicated_stream(nc: nats.NATS) -> None:
    config = StreamConfig(name="RACE", subjects=["race.>"], num_replicas=3, duplicate_window=120)
    for _ in range(100):
        try:
            await nc.jetstream().add_stream(config)
            return
        except APIError:  # the cluster is still electing
            await asyncio.sleep(0.2)
    raise AssertionError("no replicated stream")


async def served_from_every_node(clients: list[nats.NATS]) -> None:
    """Wait until each node routes the stream's subjects to it, then empty the stream.

    ``add_stream`` returns once the stream exists; the other nodes may learn of its
    subjects a moment later, and a publish there meanwhile finds no stream to answer.
    """
    for nc in clients:
        for _ in range(100):
            try:
                await nc.jetstream().publish("race.probe", b"")
                break
            except NoStreamResponseError:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"{nc.connected_url} never reached the stream")
    await clients[0].jetstream().purge_stream("RACE")


async def race(clients: list[nats.NATS], publish, prefix: str) -> list[BaseException]:  # type: ignore[no-untyped-def]
    errors: list[BaseException] = []
    for n in range(ROUNDS):
        headers = {"Nats-Msg-Id": f"{prefix}-{n}"}
        results = await asyncio.gather(
            *(publish(nc, f"race.{prefix}", b"x", headers) for nc in clients),
            return_exceptions=True,
        )
        errors.extend(r for r in results if isinstance(r, BaseException))
    return errors


async def raw(nc: nats.NATS, subject: str, payload: bytes, headers: dict[str, str]) -> None:
    await nc.jetstream().publish(subject, payload, headers=headers)


async def relayed(nc: nats.NATS, subject: str, payload: bytes, headers: dict[str, str]) -> None:
    [error] = await publish_all(BulkPublisher(nc), [(subject, headers, payload)])
    if error is not None:
        raise error


async def test_duplicate_in_process_is_success(nats_cluster: list[EmbeddedNats]) -> None:
    clients = [await nats.connect(node.url) for node in nats_cluster]
    try:
        await replicated_stream(clients[0])
        await served_from_every_node(clients)
        raw_errors = await race(clients, raw, "raw")
        conflicts = [
            e for e in raw_errors if isinstance(e, APIError) and is_duplicate_in_process(e)
        ]
        assert raw_errors == conflicts, raw_errors  # the only failure racing replicas meet
        assert conflicts, "the race never produced a 409: the test would prove nothing"

        relay_errors = await race(clients, relayed, "relay")
        assert relay_errors == []
        info = await clients[0].jetstream().stream_info("RACE")
        assert info.state.messages == 2 * ROUNDS  # each id stored exactly once
    finally:
        for nc in clients:
            await nc.close()
