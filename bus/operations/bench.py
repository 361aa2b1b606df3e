"""``claimcheck bench``: each hot path next to its raw baseline, measured in the same run.

The physical limits on one machine are the disk's fsync rate (the ledger's
commits, JetStream with ``sync_interval: always``) and NATS's own message rate.
Each row runs our path and the bare library call it is built on, on the same
nats-server and disk, so the ratio shows what claimcheck adds.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from bus.ledger import Ledger
from bus.ledger.relay import Relay
from bus.runtime.policy import Policy
from bus.runtime.service import Runtime
from bus.settings import Settings
from bus.transport.connection import connect, ensure_streams
from bus.transport.server import EmbeddedNats
from bus.transport.subjects import Subjects
from handoff_schemas import encode


@dataclass(frozen=True)
class Measurement:
    path: str
    ops_per_second: float
    baseline: str
    baseline_ops_per_second: float

    @property
    def ratio(self) -> float:
        return self.ops_per_second / self.baseline_ops_per_second


async def rate(
    count: int, concurrency: int, operation: Callable[[int], Awaitable[object]]
) -> float:
    """Operations per second for ``count`` calls, ``concurrency`` at a time."""
    started = time.perf_counter()
    for first in range(0, count, concurrency):
        await asyncio.gather(*(operation(i) for i in range(first, min(first + concurrency, count))))
    return count / (time.perf_counter() - started)


class Counter(Aggregate):
    """The plainest eventsourcing aggregate: the append baseline."""

    @event("Created")
    def __init__(self) -> None:
        self.count = 0

    @event("Incremented")
    def increment(self) -> None:
        self.count += 1


async def run_bench(count: int = 1000, concurrency: int = 16) -> list[Measurement]:
    with tempfile.TemporaryDirectory() as directory:
        state = Path(directory)
        server = EmbeddedNats(state / "nats")
        await server.start()
        try:
            settings = Settings(state_dir=state, nats_url=server.url)
            nc = await connect(settings, "bench")
            try:
                return await measure(nc, settings, count, concurrency)
            finally:
                await nc.close()
        finally:
            await server.stop()


async def measure(
    nc: Client, settings: Settings, count: int, concurrency: int
) -> list[Measurement]:
    subjects = Subjects(settings.prefix)
    js = nc.jetstream()
    await ensure_streams(js, subjects)
    ledger = Ledger.from_url(f"sqlite:///{settings.state_dir / 'ledger.db'}")
    plain = Application(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(settings.state_dir / "plain.db"),
        }
    )
    runtime = Runtime(settings, ledger, Policy.load(), nc)
    await runtime.serve()

    async def echo(msg):  # type: ignore[no-untyped-def]
        await msg.respond(msg.data)

    await nc.subscribe("bench.echo", cb=echo)
    workflow = ledger.start(
        "bench",
        "bench",
        "sha256-" + "0" * 64,
        "bench",
        "cli",
        1.0,
        {"handoffId": "ho-bench", "to": "bench", "status": "new"},
    )
    workflow_id = str(workflow.id)
    counter = Counter()
    plain.save(counter)
    results = []

    # 1. request/reply: the runtime answering a read, against a bare echo responder
    state_request = encode({"workflowId": workflow_id})
    ours = await rate(
        count,
        concurrency,
        lambda _: nc.request(subjects.runtime("bench", "state"), state_request, timeout=30),
    )
    raw = await rate(
        count, concurrency, lambda _: nc.request("bench.echo", state_request, timeout=30)
    )
    results.append(Measurement("runtime request/reply (state)", ours, "NATS request/reply", raw))

    # 2. a recorded step (checkpoint: decode, ledger commit, reply) against a plain append
    prefix = uuid4().hex

    async def checkpoint(i: int) -> object:
        body = encode({"workflowId": workflow_id, "stepKey": f"{prefix}/{i}", "name": f"c{i}"})
        return await nc.request(subjects.runtime("bench", "checkpoint"), body, timeout=30)

    ours = await rate(count, concurrency, checkpoint)

    def append() -> None:
        counter.increment()
        plain.save(counter)

    raw = await rate(count, 1, lambda _: asyncio.to_thread(append))
    results.append(
        Measurement("runtime step (checkpoint, commit)", ours, "eventsourcing append", raw)
    )

    # 3. the relay publishing ledger events against bare JetStream publishes (fsync always)
    relay = Relay(ledger, js, subjects)
    notifications = ledger.notifications(0, limit=count)
    started = time.perf_counter()
    await relay.publish(notifications)
    ours = len(notifications) / (time.perf_counter() - started)
    raw = await rate(
        count,
        1,
        lambda i: js.publish(
            f"{subjects.prefix}.events.bench.Raw",
            b"x" * 200,
            headers={"Nats-Msg-Id": f"raw-{prefix}-{i}"},
        ),
    )
    results.append(Measurement("relay publish (per event)", ours, "JetStream publish", raw))

    # 4. an inbox (fetch one, ack synchronously, as an agent does) against batched consumption
    async def consume(durable: str, batch: int, ack: bool) -> float:
        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT if ack else AckPolicy.NONE)
        subscription = await js.pull_subscribe(
            f"{subjects.prefix}.events.>",
            durable=durable,
            stream=subjects.stream("events"),
            config=config,
        )
        started, consumed = time.perf_counter(), 0
        while consumed < count:
            for msg in await subscription.fetch(min(batch, count - consumed), timeout=10):
                if ack:
                    await msg.ack_sync()
                consumed += 1
        return consumed / (time.perf_counter() - started)

    ours = await consume("bench-inbox", 1, ack=True)
    raw = await consume("bench-raw", 256, ack=False)
    results.append(Measurement("inbox consume (fetch 1, ack)", ours, "JetStream consume", raw))

    runtime.close()
    ledger.close()
    plain.close()
    return results
