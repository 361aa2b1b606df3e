"""When the runtime replica holding an agent's request dies, another answers within seconds.

A replica that took a request and went silent (a black hole on the runtime's queue group,
as a replica SIGKILLed mid-request is) is given up after a few seconds of silence, not
after the 30 s request timeout, and the request goes to a live replica. A replica that is
slow but alive says so, and is waited for: its caller does not ask again.
"""

from __future__ import annotations

import asyncio
import time

import nats
import pytest
from nats.aio.msg import Msg

from agents import RuntimeClient, RuntimeRefused
from bus.transport.connection import flushed
from bus.transport.retry import SILENCE, WORKING_HEADER
from bus.transport.subjects import Subjects
from handoff_schemas import Reply, StateRequest, StepsReply, encode
from tests.conftest import Bus

pytestmark = pytest.mark.timeout(60)


async def test_a_silent_replica_is_given_up_within_seconds(bus: Bus) -> None:
    swallowed: list[Msg] = []
    closing: list[asyncio.Task[None]] = []
    dying = await nats.connect(bus.settings.nats_url)

    async def dead_replica(msg: Msg) -> None:
        swallowed.append(msg)  # took a request, and died without answering: its
        if not dying.is_closed:  # connection goes, as a SIGKILLed process's does
            closing.append(asyncio.create_task(dying.close()))

    await dying.subscribe(bus.subjects.runtime_all, queue="runtime", cb=dead_replica)
    await flushed(dying)
    client = RuntimeClient(bus.nc, bus.subjects, "triage", timeout=30.0)

    async def ask() -> float:
        started = time.monotonic()
        with pytest.raises(RuntimeRefused):  # an answer: no such workflow
            await client.call("state", StateRequest(workflow_id="wf-none"), StepsReply)
        return time.monotonic() - started

    took: list[float] = []
    for _ in range(5):  # the queue group picks at random: 10 requests all pass the dead
        took += await asyncio.gather(*(ask() for _ in range(10)))  # replica by 1 time in 1,024
        if swallowed:
            break
    assert closing and dying.is_closed
    assert swallowed, "no request met the dead replica: the test would prove nothing"
    assert max(took) < SILENCE + 3, took  # not the 30 s request timeout


async def test_a_slow_replica_that_says_it_works_is_waited_for(bus: Bus) -> None:
    received: list[Msg] = []
    elsewhere = Subjects("slowtest")  # a prefix the real runtime does not serve
    subject = elsewhere.runtime("slow", "state")

    async def slow_replica(msg: Msg) -> None:
        received.append(msg)
        for _ in range(6):  # 6 s of work, longer than the silence that means "dead"
            await bus.nc.publish(msg.reply, b"", headers={WORKING_HEADER: "1"})
            await asyncio.sleep(1)
        reply = Reply(
            ok=True, result={"workflowId": "w", "status": "running", "steps": {}, "checkpoints": {}}
        )
        await msg.respond(encode(reply))

    working: list[asyncio.Task[None]] = []

    async def on_request(msg: Msg) -> None:  # one task per request, as the runtime does
        working.append(asyncio.create_task(slow_replica(msg)))

    await bus.nc.subscribe(subject, cb=on_request)
    client = RuntimeClient(bus.nc, elsewhere, "slow", timeout=30.0)
    answer = await client.call("state", StateRequest(workflow_id="w"), StepsReply)
    assert answer.status == "running"
    assert len(received) == 1  # asked once: a working replica is not abandoned
