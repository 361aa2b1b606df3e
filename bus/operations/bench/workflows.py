"""Whole workflows on the real processes: nats-server, runtime(s), tool host, an agent.

N workflows of K tool steps each (the agent ``agents.bench:worker``) run with 1, 16 and
200 in flight, on SQLite and, given a PostgreSQL URL, on PostgreSQL with one and two
runtimes. Each row names what bounded it from the CPU each process used meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from uuid import uuid4

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bus.operations.bench import (
    Measurement,
    ProgressLine,
    cores,
    cpu_bound,
    fresh_ledger,
    rate,
)
from bus.operations.bench.micro import bench_policy, echo
from bus.operations.operators import ask_runtime, store_artifact
from bus.operations.stack import Stack
from bus.settings import Settings
from bus.transport.connection import connect
from bus.transport.server import EmbeddedNats
from bus.transport.subjects import Subjects
from handoff_schemas import StartReply, StartRequest

IN_FLIGHT = (1, 16, 200)
ENDINGS = ("WorkflowCompleted", "WorkflowFailed", "WorkflowStopped", "EscalationRaised")
HANDLED = "CheckpointReached"
"""How the handoff row sees its handoff handled (the agent's one step)."""
AGENT_CONCURRENCY = 100
"""As many as a Temporal worker runs at once by default (activities, workflow tasks)."""
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU a process used so far (Linux ``/proc``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_ticks() -> tuple[int, int, int]:
    """The machine's CPU ticks so far (Linux ``/proc/stat``): busy, idle while a process
    waited on the disk (``iowait``), and all."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    busy = user + nice + system + irq + softirq + steal
    return busy, iowait, busy + iowait + idle


class Busy:
    """CPU per process of a stack, the whole machine's CPU and disk waits, and JetStream's
    writes, over a measured stretch: what bounded it. ``observer`` is a connection that may
    read stream info (the runtime's role)."""

    def __init__(self, stack: Stack, observer: Client) -> None:
        self.observer = observer
        self.written = 0
        self.pids = {name: process.pid for name, process in stack.processes.items()}
        if stack.nats is not None and stack.nats.process is not None:
            self.pids["nats-server"] = stack.nats.process.pid
        self.pids["bench"] = os.getpid()
        self.started = time.perf_counter()
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.machine_before = machine_ticks()

    async def begin(self) -> Busy:
        self.written = await jetstream_writes(self.observer)
        return self

    async def writes(self) -> int:
        """Messages JetStream stored since :meth:`begin`."""
        return await jetstream_writes(self.observer) - self.written

    def shares(self) -> dict[str, float]:
        wall = time.perf_counter() - self.started
        return {
            name: round((cpu_seconds(pid) - self.before[name]) / wall, 2)
            for name, pid in self.pids.items()
        }

    def machine(self) -> dict[str, float]:
        """Cores the whole machine kept busy, and cores idle while waiting on the disk."""
        busy, disk, ticks = (
            now - before for now, before in zip(machine_ticks(), self.machine_before, strict=True)
        )
        share = cores() / max(ticks, 1)
        return {"busy_cores": round(busy * share, 2), "disk_wait_cores": round(disk * share, 2)}

    @staticmethod
    def bound(shares: dict[str, float], writes_per_s: float, machine: dict[str, float]) -> str:
        """On two cores, past three quarters busy every process waits its turn for a core;
        the disk bounds a row only when the machine sits idle waiting on it."""
        busiest = max(shares, key=lambda name: shares[name])
        busy, disk = machine["busy_cores"], machine["disk_wait_cores"]
        most = f"most: {busiest} {shares[busiest]:.0%}"
        waits = f"{disk:.2f} of a core idle waiting on the disk"
        if busy >= 0.75 * cores():
            return f"CPU: {busy:.1f} of {cores()} cores busy ({most}); {waits}"
        if disk >= 0.2:
            otherwise = (
                f"fsync: JetStream ({writes_per_s:,.0f} messages/s stored, sync always) and "
                f"the ledger's commits ({waits})"
            )
        else:
            otherwise = (
                f"round trips: each request waits on the one before ({busy:.1f} of "
                f"{cores()} cores busy, {most}; {waits})"
            )
        return cpu_bound(shares[busiest], busiest, otherwise)


async def jetstream_writes(nc: Client) -> int:
    """Messages JetStream stored so far in every stream, key-value and object stores
    included: with ``sync_interval: always`` each is an fsync, or a share of one for an
    atomic batch (the relay's)."""
    return sum(info.state.last_seq for info in await nc.jetstream().streams_info())


class Workflows:
    """Starts workflows through the runtime and hears each one end, on one connection."""

    def __init__(self, nc: Client, subjects: Subjects) -> None:
        self.nc, self.subjects = nc, subjects
        self.ended: dict[str, str] = {}
        self.waiting: dict[str, asyncio.Future[str]] = {}

    async def listen(self, endings: tuple[str, ...]) -> None:
        for ending in endings:
            await self.nc.jetstream().subscribe(
                self.subjects.event("*", ending),
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.NEW,
                cb=self._on_end,
            )

    async def _on_end(self, msg: Msg) -> None:
        workflow_id, ending = msg.subject.rsplit(".", 2)[-2:]
        self.ended.setdefault(workflow_id, ending)
        waiter = self.waiting.pop(workflow_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(ending)

    async def run(self, task: str, artifact_id: str) -> str:
        """Start one workflow and wait for it to end; return how it ended."""
        request = StartRequest(
            task=task, to="bench", artifact_id=artifact_id, scope="bench", request_id=uuid4().hex
        )
        reply = await ask_runtime(self.nc, self.subjects, "start", request, StartReply)
        if reply.workflow_id in self.ended:
            return self.ended[reply.workflow_id]
        waiter = self.waiting[reply.workflow_id] = asyncio.get_running_loop().create_future()
        return await asyncio.wait_for(waiter, 120)


async def run_workflows(
    count: int, steps: int, postgres: str, progress: ProgressLine
) -> list[Measurement]:
    results = await on_stack(count, steps, "", 1, progress)
    raw = await raw_handoffs(count, progress)
    results = [
        replace(r, baseline_value=raw) if r.path == "handoff end to end" else r for r in results
    ]
    if postgres:
        for runtimes in (1, 2):
            results += await on_stack(count, steps, postgres, runtimes, progress)
    return results


async def on_stack(
    count: int, steps: int, ledger: str, runtimes: int, progress: ProgressLine
) -> list[Measurement]:
    with tempfile.TemporaryDirectory() as directory:
        async with fresh_ledger(ledger) as ledger_url:
            settings = Settings(
                state_dir=Path(directory),
                nats_port=0,
                policy=bench_policy(Path(directory)),
                ledger=ledger_url,
                agent_concurrency=AGENT_CONCURRENCY,
            )
            async with Stack(settings, agents=("agents.bench:worker",), runtimes=runtimes) as stack:
                return await on_running_stack(stack, count, steps, runtimes, progress)


async def on_running_stack(
    stack: Stack, count: int, steps: int, runtimes: int, progress: ProgressLine
) -> list[Measurement]:
    settings = stack.settings
    postgres = not settings.ledger_url().startswith("sqlite")
    where = f"PostgreSQL, {runtimes} runtime{'s' if runtimes > 1 else ''}" if postgres else "SQLite"
    nc = await connect(settings, "claimcheck-bench")
    runtime_role = {"credentials": stack.credentials.get("runtime")}
    observer = await connect(settings.model_copy(update=runtime_role), "bench-observer")
    try:
        subjects = Subjects(settings.prefix)
        workflows = Workflows(nc, subjects)
        await workflows.listen((*ENDINGS, HANDLED))
        data = json.dumps({"steps": steps}).encode()
        artifact = await store_artifact(nc, subjects, data)
        await workflows.run("bench_workflow", artifact)  # warm: every process ready
        results = []
        for in_flight in (16, 200) if postgres else IN_FLIGHT:
            progress(f"whole workflows ({where}), {in_flight} in flight")
            busy = Busy(stack, observer)
            results.append(await measure(busy, workflows, artifact, count, steps, in_flight, where))
        if not postgres:
            progress("handoffs end to end, 16 in flight")
            handoff = await store_artifact(nc, subjects, b'{"steps": 0}')
            results.append(await handoffs(Busy(stack, observer), workflows, handoff, count))
        return results
    finally:
        await nc.close()
        await observer.close()


async def handoffs(busy: Busy, workflows: Workflows, artifact: str, count: int) -> Measurement:
    """Handoffs end to end, 16 in flight: each the start's handoff and the agent's one step."""
    await busy.begin()
    ours, _ = await rate(count, 16, lambda _: workflows.run("bench_handoff", artifact))
    writes = await busy.writes() / count
    shares, machine = busy.shares(), busy.machine()
    return Measurement(
        "handoff end to end",
        16,
        ours,
        "JetStream publish, consume, ack",
        None,
        Busy.bound(shares, writes * ours, machine),
        detail={
            "cpu": shares,
            "machine": machine,
            "jetstream_writes_per_handoff": round(writes, 1),
        },
    )


async def measure(
    busy: Busy,
    workflows: Workflows,
    artifact: str,
    count: int,
    steps: int,
    in_flight: int,
    where: str,
) -> Measurement:
    count = count if in_flight > 1 else max(5, count // 10)
    endings: list[str] = []

    async def one(_: int) -> None:
        endings.append(await workflows.run("bench_workflow", artifact))

    await busy.begin()
    per_second, _ = await rate(count, in_flight, one)
    writes = await busy.writes() / (count * steps)
    shares, machine = busy.shares(), busy.machine()
    failed = [ending for ending in endings if ending != "WorkflowCompleted"]
    return Measurement(
        f"whole workflows, {steps} tool steps ({where})",
        in_flight,
        per_second * steps,
        "Temporal (see its rows)",
        None,
        Busy.bound(shares, writes * per_second * steps, machine),
        unit="steps per s",
        detail={
            "workflows": count,
            "jetstream_writes_per_step": round(writes, 1),
            "workflows_per_s": round(per_second, 1),
            "not_completed": len(failed),
            "cpu": shares,
            "machine": machine,
        },
    )


async def raw_handoffs(count: int, progress: ProgressLine) -> float:
    """The handoff row's baseline: publish, consume and acknowledge on bare JetStream,
    16 in flight, on a private nats-server on the same disk."""
    progress("JetStream publish, consume, ack, 16 in flight")
    with tempfile.TemporaryDirectory() as directory:
        server = EmbeddedNats(Path(directory))
        await server.start()
        nc = await connect(Settings(state_dir=Path(directory), nats_url=server.url), "raw")
        try:
            js = nc.jetstream()
            await js.add_stream(name="RAW", subjects=["raw.>"])
            config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT)
            # A pull subscription per slot: nats-py's fetch is not safe for concurrent use
            # of one (a fetch may take the message another's request brought, and that one
            # waits out its timeout), which now and then failed the whole run.
            inboxes: asyncio.Queue[JetStreamContext.PullSubscription] = asyncio.Queue()
            for _ in range(16):
                inboxes.put_nowait(await js.pull_subscribe("raw.>", durable="raw", config=config))
            await nc.subscribe("bench.echo", cb=echo)

            async def handoff(i: int) -> None:
                await js.publish("raw.inbox", b"x" * 300, headers={"Nats-Msg-Id": f"m{i}"})
                inbox = await inboxes.get()
                try:
                    for msg in await inbox.fetch(1, timeout=10):
                        await nc.request("bench.echo", b"{}", timeout=10)  # the runtime request
                        await msg.ack_sync()
                finally:
                    inboxes.put_nowait(inbox)

            raw, _ = await rate(count, 16, handoff)
        finally:
            await nc.close()
            await server.stop()
    return raw
