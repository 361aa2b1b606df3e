"""Requests that wait while a replica works, sharing one reply subscription per connection.

Each request's messages (its "still working" beats, then its answer) reach that request
alone; many requests at once hold one subscription, not one each; a late answer to a
request given up on reaches no later request; a subject nobody serves says so at once;
a connection its user drops is not kept alive by its replies.
"""

from __future__ import annotations

import asyncio
import gc
import random
import weakref

import nats
import pytest
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from bus.transport.connection import flushed
from bus.transport.retry import WORKING_HEADER, Replies, request_while_working
from bus.transport.server import EmbeddedNats

pytestmark = pytest.mark.timeout(60)


async def test_concurrent_requests_get_their_own_answers_on_one_subscription(
    nats_server: EmbeddedNats,
) -> None:
    replica = await nats.connect(nats_server.url)
    caller = await nats.connect(nats_server.url)
    working: list[asyncio.Task[None]] = []

    async def answer(msg: Msg) -> None:
        for _ in range(random.randint(0, 2)):
            await replica.publish(msg.reply, b"", headers={WORKING_HEADER: "1"})
            await asyncio.sleep(random.uniform(0, 0.05))
        await msg.respond(b"answer to " + msg.data)

    async def on_request(msg: Msg) -> None:
        working.append(asyncio.create_task(answer(msg)))

    try:
        await replica.subscribe("svc.echo", cb=on_request)
        await flushed(replica)
        subscriptions_before = len(caller._subs)
        held: list[int] = []

        async def ask(index: int) -> bytes:
            request = asyncio.create_task(
                request_while_working(caller, "svc.echo", str(index).encode(), timeout=10)
            )
            await asyncio.sleep(0.01)
            held.append(len(caller._subs) - subscriptions_before)
            return (await request).data

        answers = await asyncio.gather(*(ask(i) for i in range(30)))
        assert answers == [f"answer to {i}".encode() for i in range(30)]
        assert max(held) == 1, held  # one subscription for all thirty, not one each
    finally:
        await caller.close()
        await replica.close()


async def test_a_late_answer_reaches_no_later_request(nats_server: EmbeddedNats) -> None:
    replica = await nats.connect(nats_server.url)
    caller = await nats.connect(nats_server.url)
    late: list[asyncio.Task[None]] = []

    async def slow(msg: Msg) -> None:
        await asyncio.sleep(0.6)  # after the caller's silence: it has given up
        await msg.respond(b"late")

    async def on_slow(msg: Msg) -> None:
        late.append(asyncio.create_task(slow(msg)))

    async def on_quick(msg: Msg) -> None:
        await asyncio.sleep(0.4)  # so the late answer arrives while this one waits
        await msg.respond(b"quick")

    try:
        await replica.subscribe("svc.slow", cb=on_slow)
        await replica.subscribe("svc.quick", cb=on_quick)
        await flushed(replica)
        with pytest.raises(NatsTimeout):
            await request_while_working(caller, "svc.slow", b"", timeout=10, silence=0.3)
        answer = await request_while_working(caller, "svc.quick", b"", timeout=10)
        assert answer.data == b"quick"
        await asyncio.gather(*late)
    finally:
        await caller.close()
        await replica.close()


async def test_a_subject_nobody_serves_says_so_at_once(nats_server: EmbeddedNats) -> None:
    caller = await nats.connect(nats_server.url)
    try:
        with pytest.raises(NoRespondersError):
            await asyncio.wait_for(request_while_working(caller, "svc.nobody", b"", timeout=30), 5)
    finally:
        await caller.close()


async def test_a_dropped_connection_is_not_kept_alive_by_its_replies(
    nats_server: EmbeddedNats,
) -> None:
    caller = await nats.connect(nats_server.url)
    with pytest.raises(NoRespondersError):
        await request_while_working(caller, "svc.nobody", b"", timeout=5)
    assert caller in Replies._of
    await caller.close()
    dropped = weakref.ref(caller)
    del caller
    gc.collect()
    assert dropped() is None


async def test_a_subscription_flushed_is_served_to_the_next_request(
    nats_server: EmbeddedNats,
) -> None:
    """nats-py's own ``flush`` can return before the server has the SUB (1 in 40 here):
    its PING overtakes what the flusher task has yet to write."""
    replica = await nats.connect(nats_server.url)
    caller = await nats.connect(nats_server.url)

    async def answer(msg: Msg) -> None:
        await msg.respond(b"here")

    try:
        for n in range(200):
            await replica.subscribe(f"svc.fresh.{n}", cb=answer)
            await flushed(replica)
            assert (await caller.request(f"svc.fresh.{n}", b"", timeout=5)).data == b"here"
    finally:
        await caller.close()
        await replica.close()
