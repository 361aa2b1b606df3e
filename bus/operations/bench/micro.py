"""The runtime's hot paths in one process, each beside the bare library call under it.

The runtime, its relay and a tool host run in the bench process, on a private nats-server
and ledger: what bounds a row here is this one process's CPU, fsync or NATS round trips.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from uuid import uuid4

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from bus.ledger import Ledger
from bus.ledger.relay import Relay
from bus.operations.bench import Measurement, ProgressLine, cpu_bound, percentile, rate
from bus.runtime.catalogue import Call
from bus.runtime.policy import Policy
from bus.runtime.service import Runtime
from bus.runtime.tool_host import ToolHost
from bus.settings import Settings
from bus.tools import complaints
from bus.tools.tickets import Ticket, create_ticket
from bus.transport.connection import connect, ensure_streams
from bus.transport.server import EmbeddedNats
from bus.transport.subjects import Subjects
from handoff_schemas import encode

IN_FLIGHT = (1, 16, 64)
WORKFLOWS = 64
"""Steps are spread over this many workflows, as under real load."""

POLICY = """
[[rules]]
name = "bench"
actor = "bench"
action = "create_ticket"
resource = "ticket:*"
effect = "allow"

[tasks.bench_workflow]
done = [{action = "create_ticket", status = "succeeded"}]
"""


class Counter(Aggregate):
    """The plainest eventsourcing aggregate: the append baseline."""

    @event("Created")
    def __init__(self) -> None:
        self.count = 0

    @event("Incremented")
    def increment(self) -> None:
        self.count += 1


def bench_policy(directory: Path) -> Path:
    """A policy letting the agent ``bench`` create tickets (the workflows' tool)."""
    path = directory / "bench-policy.toml"
    path.write_text(POLICY)
    return path


@asynccontextmanager
async def private_bus() -> AsyncIterator[tuple[Client, Settings]]:
    """A nats-server and state directory of their own for a part of the bench that runs the
    runtime in this process, and a connection to that server."""
    with tempfile.TemporaryDirectory() as directory:
        state = Path(directory)
        server = EmbeddedNats(state / "nats")
        await server.start()
        try:
            settings = Settings(state_dir=state, nats_url=server.url, policy=bench_policy(state))
            nc = await connect(settings, "bench")
            try:
                yield nc, settings
            finally:
                await nc.close()
        finally:
            await server.stop()


async def run_micro(count: int, progress: ProgressLine) -> list[Measurement]:
    async with private_bus() as (nc, settings):
        return await Micro(nc, settings, count, progress).measure()


class Micro:
    def __init__(self, nc: Client, settings: Settings, count: int, progress: ProgressLine) -> None:
        self.nc, self.settings, self.count, self.progress = nc, settings, count, progress
        self.subjects = Subjects(settings.prefix)
        self.js = nc.jetstream()
        self.ledger = Ledger.from_url(f"sqlite:///{settings.state_dir / 'ledger.db'}")
        self.plain = Application[object](
            env={
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(settings.state_dir / "plain.db"),
            }
        )
        self.runtime = Runtime(settings, self.ledger, Policy.load(settings.policy), nc)

    async def measure(self) -> list[Measurement]:
        await ensure_streams(self.js, self.subjects)
        await self.runtime.serve()
        await ToolHost(self.settings, [complaints]).serve(self.nc)
        await self.nc.subscribe("bench.echo", cb=echo)
        self.workflows = [self.start() for _ in range(WORKFLOWS)]
        try:
            results = []
            for in_flight in IN_FLIGHT:
                results.append(await self.reads(in_flight))
                results.append(await self.governed_steps(in_flight))
            results.append(await self.tool_latency())
            results.append(await self.relay())
            results.append(await self.inbox())
            return results
        finally:
            self.runtime.close()
            self.ledger.close()
            self.plain.close()

    def start(self) -> str:
        workflow = self.ledger.start(
            Ledger.starting(
                "bench_workflow",
                "bench",
                "sha256-" + "0" * 64,
                "bench",
                "cli",
                1000.0,
                {"handoffId": f"ho-{uuid4().hex}", "to": "bench", "status": "new"},
            )
        )
        return str(workflow.id)

    async def reads(self, in_flight: int) -> Measurement:
        self.progress(f"runtime reads, {in_flight} in flight")
        body = encode({"workflowId": self.workflows[0]})
        subject = self.subjects.runtime("bench", "state")
        ours, cpu = await rate(
            self.count, in_flight, lambda _: self.nc.request(subject, body, timeout=30)
        )
        raw, _ = await rate(
            self.count, in_flight, lambda _: self.nc.request("bench.echo", body, timeout=30)
        )
        bound = cpu_bound(cpu, "the bench process (runtime and client)", "NATS round trips")
        return Measurement(
            "runtime read (state)", in_flight, ours, "NATS request/reply", raw, bound
        )

    async def governed_steps(self, in_flight: int) -> Measurement:
        """A recorded step (decode, step-key check, commit, reply) against a plain append,
        both spread over many aggregates and with as many in flight."""
        self.progress(f"governed steps, {in_flight} in flight")
        prefix, subject = uuid4().hex, self.subjects.runtime("bench", "checkpoint")

        async def checkpoint(i: int) -> object:
            body = encode(
                {
                    "workflowId": self.workflows[i % WORKFLOWS],
                    "stepKey": f"{prefix}/{i}",
                    "name": f"c{i}",
                }
            )
            return await self.nc.request(subject, body, timeout=30)

        ours, cpu = await rate(self.count, in_flight, checkpoint)
        counters = [Counter() for _ in range(WORKFLOWS)]
        self.plain.save(*counters)

        def append(i: int) -> None:
            counter = self.plain.repository.get(counters[i % WORKFLOWS].id)
            counter.increment()
            self.plain.save(counter)

        raw, _ = await rate(self.count, in_flight, lambda i: asyncio.to_thread(append, i))
        bound = cpu_bound(cpu, "the bench process (runtime and client)", "fsync of the ledger")
        return Measurement(
            "governed step (checkpoint)", in_flight, ours, "eventsourcing append", raw, bound
        )

    async def tool_latency(self) -> Measurement:
        """A governed tool step, one at a time: its p50 against a NATS round trip plus the
        tool's own time (the same ticket insert, called directly)."""
        self.progress("tool step latency, 1 in flight")
        count = max(10, self.count // 10)
        subject = self.subjects.runtime("bench", "execute")
        payload = {"customer": "acme", "title": "bench", "severity": "low"}
        ours: list[float] = []
        for i in range(count):
            body = encode(
                {
                    "workflowId": self.workflows[i % WORKFLOWS],
                    "stepKey": f"tool/{i}",
                    "tool": "create_ticket",
                    "payload": payload,
                }
            )
            started = time.perf_counter()
            await self.nc.request(subject, body, timeout=30)
            ours.append((time.perf_counter() - started) * 1000)
        raw = [await timed(self.nc.request("bench.echo", b"{}", timeout=30)) for _ in range(count)]
        ticket = Ticket.model_validate(payload)
        own = [
            await timed(create_ticket(ticket, Call(f"direct-{i}", "bench", "bench", self.settings)))
            for i in range(count)
        ]
        baseline = percentile(raw, 0.5) + percentile(own, 0.5)
        return Measurement(
            "tool step latency p50",
            1,
            percentile(ours, 0.5),
            "NATS request/reply + tool",
            baseline,
            "round trips and commits in sequence (fsync)",
            unit="ms",
            detail={
                "p99_ms": percentile(ours, 0.99),
                "baseline_p99_ms": percentile(raw, 0.99) + percentile(own, 0.99),
                "tool_p50_ms": percentile(own, 0.5),
            },
        )

    async def relay(self) -> Measurement:
        """The relay publishing every event the rows above recorded (about seven per
        operation: a sample of ``count`` events took a fraction of a second and moved twofold
        from run to run) against as many bare JetStream publishes, pipelined."""
        self.progress("relay publishing")
        relay = Relay(self.ledger, self.nc, self.subjects)
        everything = self.ledger.recorder.max_notification_id() or 0
        notifications = self.ledger.notifications(0, limit=everything)
        started = time.perf_counter()
        await relay.publish(notifications)
        ours = len(notifications) / (time.perf_counter() - started)
        await relay.close()
        prefix = uuid4().hex
        raw, _ = await rate(
            len(notifications),
            256,
            lambda i: self.js.publish(
                f"{self.subjects.prefix}.events.bench.Raw",
                b"x" * 200,
                headers={"Nats-Msg-Id": f"raw-{prefix}-{i}"},
            ),
        )
        return Measurement(
            "relay publish (per event)",
            256,
            ours,
            "JetStream publish",
            raw,
            "JetStream acknowledgements (fsync always)",
        )

    async def inbox(self) -> Measurement:
        """An inbox as an agent reads it (a batch, each acknowledged) against a plain
        batched consumer with the same acknowledgements."""
        self.progress("inbox consumption")

        async def consume(durable: str, batch: int, synchronous: bool) -> float:
            subscription = await self.js.pull_subscribe(
                f"{self.subjects.prefix}.events.>",
                durable=durable,
                stream=self.subjects.stream("events"),
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
            )
            started, consumed = time.perf_counter(), 0
            while consumed < self.count:
                messages = await subscription.fetch(min(batch, self.count - consumed), timeout=10)
                acks = (m.ack_sync() if synchronous else m.ack() for m in messages)
                await asyncio.gather(*acks)
                consumed += len(messages)
            return consumed / (time.perf_counter() - started)

        ours = await consume("bench-inbox", 16, synchronous=True)
        raw = await consume("bench-raw", 256, synchronous=False)
        return Measurement(
            "inbox consume (fetch 16, ack each)",
            16,
            ours,
            "JetStream consume + ack",
            raw,
            "NATS round trips (acknowledged one by one)",
        )


async def echo(msg: Msg) -> None:
    await msg.respond(msg.data)


async def timed(call: object) -> float:
    started = time.perf_counter()
    await call  # type: ignore[misc]
    return (time.perf_counter() - started) * 1000
