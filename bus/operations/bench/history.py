"""Cost against history: a workflow's steps as its own history grows, and a step's latency
and the runtime's memory as the ledger grows.

Neither should grow. One workflow's step rate is measured at 100 steps of its own history
and again at 5,000 (the ratio should be about 1); then checkpoint latency (p50, p99) and the
process's resident memory at 1,000, 10,000 and 100,000 ledger events (1,000,000 with
``--big-ledger``), the events spread over up to 10,000 open workflows (one per ten events),
each latency row beside the smallest ledger's.

The ledger is filled fast: workflows are started in large commits, and their checkpoint
steps are written straight to the recorder, copied from events the aggregate recorded once
(a million events in a Python loop of aggregate methods would take most of an hour). It is
measured through the real runtime: a NATS request per checkpoint, one at a time, each to a
workflow drawn at random from the open ones, while the runtime's sweeper reads them all.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.persistence import StoredEvent
from nats.aio.client import Client
from rich.table import Table

from bus.ledger import Ledger, Workflow
from bus.ledger.step_replies import SNAPSHOT_EVERY
from bus.operations.bench import Measurement, ProgressLine, memory_mb, percentile
from bus.operations.bench.micro import private_bus
from bus.runtime.policy import Policy
from bus.runtime.service import Runtime
from bus.settings import Settings
from bus.transport.connection import ensure_streams
from bus.transport.retry import request_while_working
from bus.transport.subjects import Subjects
from handoff_schemas import encode

OWN_HISTORY = (100, 5000)
"""Steps of one workflow's own history at which its step rate is measured."""
ROUNDS = 5
LEDGER_SIZES = (1_000, 10_000, 100_000)
BIG_LEDGER = 1_000_000
OPEN_WORKFLOWS = 10_000
EVENTS_PER_WORKFLOW = 10
"""A ledger of n events holds n / 10 open workflows, up to :data:`OPEN_WORKFLOWS`."""
COMMIT = 20_000
"""Events per commit while filling."""
EVENTS_PER_STEP = 2
"""A checkpoint step records two events: the checkpoint and the step's reply."""


async def run_history(count: int, big_ledger: bool, progress: ProgressLine) -> list[Measurement]:
    """The own-history row, then one row per ledger size."""
    sizes = (*LEDGER_SIZES, BIG_LEDGER) if big_ledger else LEDGER_SIZES
    async with private_bus() as (nc, settings):
        history = History(nc, settings, count, progress)
        await history.serve()
        try:
            return [await history.own_history(), *await history.ledger_sizes(sizes)]
        finally:
            history.close()


def step_events(ledger: Ledger, count: int, prefix: str) -> list[StoredEvent]:
    """``count`` checkpoint steps as the runtime records them (two events each), stored
    form, recorded on a scratch workflow after its two first events: a template that
    :meth:`History.fill` copies into real workflows' histories."""
    scratch = Workflow("bench_workflow", "bench", "sha256-" + "0" * 64, "bench", "cli", 1e6)
    scratch.collect_events()
    for number in range(count):
        key = f"{prefix}/{number}"
        scratch.reach_checkpoint("bench", f"fill-{number % 10}", {"n": number}, key, [], [])
        scratch.complete_step(key, "checkpoint", {"ok": True, "result": {"stepKey": key}})
    return [ledger.mapper.to_stored_event(event) for event in scratch.collect_events()]


class History:
    def __init__(self, nc: Client, settings: Settings, count: int, progress: ProgressLine) -> None:
        self.nc, self.settings, self.progress = nc, settings, progress
        self.count = max(100, count // 5)
        self.subjects = Subjects(settings.prefix)
        self.ledger = Ledger.from_url(f"sqlite:///{settings.state_dir / 'ledger.db'}")
        self.runtime = Runtime(settings, self.ledger, Policy.load(settings.policy), nc)
        self.subject = self.subjects.runtime("bench", "checkpoint")
        self.workflows: list[str] = []
        self.events = 0

    async def serve(self) -> None:
        await ensure_streams(self.nc.jetstream(), self.subjects)
        await self.runtime.serve()

    def close(self) -> None:
        self.runtime.close()
        self.ledger.close()

    async def in_ledger(self, call: Callable[..., Any], *args: Any) -> Any:
        return await self.runtime.steps.in_ledger_thread(call, *args)

    async def step(self, workflow_id: str) -> float:
        """One checkpoint through the runtime; its latency in ms."""
        body = encode({"workflowId": workflow_id, "stepKey": f"s/{uuid4().hex}", "name": "b"})
        started = time.perf_counter()
        reply = await request_while_working(self.nc, self.subject, body, timeout=60)
        if b'"ok":true' not in reply.data:
            raise RuntimeError(f"the checkpoint failed: {reply.headers} {reply.data[:300]!r}")
        return (time.perf_counter() - started) * 1000

    async def own_history(self) -> Measurement:
        """Steps of a workflow with 100 steps of history and of one with 5,000, one at a
        time, in alternating rounds (so both see the same machine): their rates."""
        short, long = await self.start(2)
        elapsed = {short: 0.0, long: 0.0}
        for workflow_id, steps in zip((short, long), OWN_HISTORY, strict=True):
            self.progress(f"one workflow's steps at {steps:,} steps of its history")
            await self.fill([workflow_id], steps * EVENTS_PER_STEP - self.length(workflow_id))
            await self.step(workflow_id)  # the runtime catches up with the filled events once
        for _ in range(ROUNDS):
            for workflow_id in (short, long):
                started = time.perf_counter()
                for _ in range(self.count // ROUNDS):
                    await self.step(workflow_id)
                elapsed[workflow_id] += time.perf_counter() - started
        snapshots = self.ledger.snapshots
        assert snapshots is not None
        last = snapshots.recorder.select_events(UUID(long), desc=True, limit=1)
        steps = self.count // ROUNDS * ROUNDS
        return Measurement(
            f"one workflow's steps at {OWN_HISTORY[1]:,} steps of history",
            1,
            steps / elapsed[long],
            f"one at {OWN_HISTORY[0]:,}, in turns",
            steps / elapsed[short],
            "fsync of the ledger (a commit per step)",
            detail={"snapshot_bytes": len(last[0].state) if last else 0},
        )

    def length(self, workflow_id: str) -> int:
        return self.ledger.read(workflow_id, lambda wf: wf.version)

    async def start(self, count: int) -> list[str]:
        """``count`` workflows handed to ``bench``, saved in large commits."""

        def save(number: int) -> list[str]:
            started = []
            for _ in range(number):
                workflow = Workflow(
                    "bench_workflow", "bench", "sha256-" + "0" * 64, "bench", "cli", 1e6
                )
                handoff = {"handoffId": f"ho-{uuid4().hex}", "to": "bench", "status": "new"}
                workflow.send_handoff({**handoff, "workflowId": str(workflow.id)})
                started.append(workflow)
            self.ledger.save(*started)
            return [str(workflow.id) for workflow in started]

        ids: list[str] = []
        while len(ids) < count:
            ids += await self.in_ledger(save, min(COMMIT // 4, count - len(ids)))
        self.events += 2 * count
        return ids

    async def fill(self, workflow_ids: list[str], events: int) -> None:
        """About ``events`` more events spread over ``workflow_ids``, written to the recorder
        in commits of :data:`COMMIT` events: each workflow's next checkpoint steps, copied
        from a template (the runtime's cache catches up with them on its next read, as it
        does with another replica's commits)."""
        steps = max(0, events // EVENTS_PER_STEP)
        per_workflow, extra = divmod(steps, len(workflow_ids))
        template = step_events(self.ledger, per_workflow + (extra > 0), f"fill-{uuid4().hex}")
        versions = await self.in_ledger(self.versions, workflow_ids)
        batch: list[StoredEvent] = []
        for index, workflow_id in enumerate(workflow_ids):
            count = (per_workflow + (index < extra)) * EVENTS_PER_STEP
            after = versions[workflow_id] - template[0].originator_version + 1
            batch += [
                StoredEvent(UUID(workflow_id), e.originator_version + after, e.topic, e.state)
                for e in template[:count]
            ]
            if len(batch) >= COMMIT or index == len(workflow_ids) - 1:
                await self.in_ledger(self.ledger.recorder.insert_events, batch)
                batch = []
        self.events += steps * EVENTS_PER_STEP
        longest = max(versions.values()) + (per_workflow + 1) * EVENTS_PER_STEP
        if len(workflow_ids) > 1 and longest >= SNAPSHOT_EVERY:
            # Workflows this long have snapshots when their events come through the
            # aggregate; a step that loads one replays at most an interval, not it all.
            for workflow_id in workflow_ids:
                await self.in_ledger(self.ledger.take_snapshot, UUID(workflow_id))

    def versions(self, workflow_ids: list[str]) -> dict[str, int]:
        """Each workflow's last stored version (read in the ledger thread)."""
        return {
            workflow_id: self.ledger.recorder.select_events(UUID(workflow_id), desc=True, limit=1)[
                0
            ].originator_version
            for workflow_id in workflow_ids
        }

    async def ledger_sizes(self, sizes: tuple[int, ...]) -> list[Measurement]:
        rows: list[Measurement] = []
        for size in sizes:
            self.progress(f"checkpoint latency at {size:,} ledger events")
            wanted = min(OPEN_WORKFLOWS, max(1, size // EVENTS_PER_WORKFLOW))
            if wanted > len(self.workflows):
                self.workflows += await self.start(wanted - len(self.workflows))
            if size > self.events:
                await self.fill(self.workflows, size - self.events)
            latencies = [await self.step(random.choice(self.workflows)) for _ in range(self.count)]
            self.events += self.count * EVENTS_PER_STEP
            first = rows[0] if rows else None
            p50 = percentile(latencies, 0.5)
            rows.append(
                Measurement(
                    f"checkpoint latency p50 at {size:,} ledger events",
                    1,
                    p50,
                    f"the same at {sizes[0]:,} events",
                    first.value if first else p50,
                    "a commit per step (fsync); loads of workflows out of the cache",
                    unit="ms",
                    detail={
                        "ledger_events": size,
                        "open_workflows": len(self.workflows),
                        "p99_ms": percentile(latencies, 0.99),
                        "runtime_rss_mb": memory_mb(),
                    },
                )
            )
        return rows


def ledger_size_table(results: list[Measurement]) -> Table | None:
    """The rows by ledger size, as their own table (None when the run had none)."""
    rows = [row for row in results if "ledger_events" in row.detail]
    if not rows:
        return None
    view = Table("ledger events", "open workflows", "p50", "p99", "runtime RSS")
    for row in rows:
        view.add_row(
            f"{row.detail['ledger_events']:,}",
            f"{row.detail['open_workflows']:,}",
            f"{row.value:.1f} ms",
            f"{row.detail['p99_ms']:.1f} ms",
            f"{row.detail['runtime_rss_mb']:,.0f} MB",
        )
    return view
