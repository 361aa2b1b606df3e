"""``claimcheck bench``: each hot path next to its raw baseline, measured in the same run.

The physical limits on one machine are the disk's fsync rate (the ledger's commits,
JetStream with ``sync_interval: always``), NATS's own message rate and the CPU of the
busiest process. Each row runs our path and the bare library call it is built on at the
same concurrency, on the same nats-server and disk, so the ratio shows what claimcheck
adds, and says what bounded it.

- :mod:`~bus.operations.bench.micro`: one process, the runtime in it (steps, relay, inbox);
- :mod:`~bus.operations.bench.history`: step cost and memory as histories grow;
- :mod:`~bus.operations.bench.workflows`: whole workflows on the real processes;
- :mod:`~bus.operations.bench.temporal`: the same workflows on Temporal, when installed;
- :mod:`~bus.operations.bench.ledger_scale`: ``verify --offline`` and ``views rebuild``
  reading a ledger of N events, beside the bare recorder reading it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from uuid import uuid4

ProgressLine = Callable[[str], None]
"""Where a long run says what it is measuring now."""


@dataclass(frozen=True)
class Measurement:
    path: str
    in_flight: int
    value: float
    baseline: str
    baseline_value: float | None
    bound: str
    """What limited this row: the CPU of which process, fsync, NATS."""
    unit: str = "per s"
    """``per s`` (higher is better) or ``ms`` (a latency: lower is better)."""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """How many times the baseline (a latency: how many times its time)."""
        if not self.baseline_value:
            return None
        return self.value / self.baseline_value

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def rate(
    count: int, in_flight: int, operation: Callable[[int], Awaitable[object]]
) -> tuple[float, float]:
    """Operations per second for ``count`` calls with ``in_flight`` at a time, and the share
    of one core this process used meanwhile."""
    slots = asyncio.Semaphore(in_flight)

    async def one(index: int) -> None:
        async with slots:
            await operation(index)

    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    wall = time.perf_counter() - started
    return count / wall, (time.process_time() - cpu) / wall


def cpu_bound(share: float, who: str, otherwise: str) -> str:
    """The bound of a row: a process that kept a core busy, else ``otherwise``."""
    return f"CPU of {who} ({share:.0%} of a core)" if share >= 0.85 else otherwise


def memory_mb(peak: bool = False) -> float:
    """This process's resident memory (Linux ``/proc``), now or at its peak, in MB.

    The peak is ``VmHWM``, which starts again at ``exec``: ``getrusage``'s ``ru_maxrss``
    carries the forking parent's peak over, so a read in a child of a large bench process
    reported the parent's memory as its own.
    """
    field = "VmHWM:" if peak else "VmRSS:"
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


def cores() -> int:
    return len(os.sched_getaffinity(0))


async def run_bench(
    count: int = 1000,
    workflows: int = 200,
    steps: int = 5,
    postgres: str = "",
    progress: ProgressLine = lambda _: None,
    big_ledger: bool = False,
    ledger_events: int = 20_000,
) -> list[Measurement]:
    """Every row: the micro paths at 1, 16 and 64 in flight, cost against history (a
    workflow's own, the ledger's, up to a million events with ``big_ledger``), whole
    workflows, then reading a ledger of ``ledger_events`` events; with ``postgres``, the
    whole workflows and the reads again on PostgreSQL."""
    from bus.operations.bench.history import run_history
    from bus.operations.bench.ledger_scale import run_ledger_scale
    from bus.operations.bench.micro import run_micro
    from bus.operations.bench.temporal import run_temporal
    from bus.operations.bench.workflows import run_workflows

    results = await run_micro(count, progress)
    results += await run_history(count, big_ledger, progress)
    ours = await run_workflows(workflows, steps, postgres, progress)
    theirs = await run_temporal(workflows, steps, progress)
    reads = await run_ledger_scale(ledger_events, postgres, progress)
    return results + against(ours, theirs) + theirs + reads


def against(ours: list[Measurement], theirs: list[Measurement]) -> list[Measurement]:
    """Each whole-workflow row beside Temporal's at the same in flight: on a SQLite file,
    and again beside Temporal in memory."""
    paired = []
    for row in ours:
        peers = [peer for peer in theirs if peer.in_flight == row.in_flight]
        if not row.path.startswith("whole workflows") or not peers:
            paired.append(row)
            continue
        for peer in peers:
            where = peer.path.rsplit("(", 1)[-1].rstrip(")")
            paired.append(replace(row, baseline=f"Temporal, {where}", baseline_value=peer.value))
    return paired


@asynccontextmanager
async def fresh_ledger(postgres: str) -> AsyncIterator[str]:
    """The ledger URL for one run: a new PostgreSQL schema, dropped afterwards, or ``""``
    (a SQLite file in the run's state directory) when ``postgres`` is empty."""
    if not postgres:
        yield ""
        return
    import psycopg

    schema = f"cc_bench_{uuid4().hex[:10]}"

    def execute(sql: str) -> None:
        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(sql)

    await asyncio.to_thread(execute, f"CREATE SCHEMA {schema}")
    try:
        yield f"{postgres}{'&' if '?' in postgres else '?'}schema={schema}"
    finally:
        await asyncio.to_thread(execute, f"DROP SCHEMA {schema} CASCADE")
