"""``claimcheck init`` sets a deployment up once, from several places at once; services check.

Real OS processes, a real nats-server, real SQLite and PostgreSQL: four inits started
together all succeed, a runtime started before any init refuses with a message naming the
command, and after init it serves.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import nats
import pytest

from bus.ledger.setup import NotInitialised, open_ledger
from bus.settings import Settings
from bus.transport.subjects import OPERATOR, Subjects
from tests.conftest import CLI

pytestmark = pytest.mark.timeout(120)


def environment(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.as_environment(), "COLUMNS": "400"}


def start(settings: Settings, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, *args],
        env=environment(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def run_init(settings: Settings) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [*CLI, "init"],
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def stream_names(settings: Settings) -> set[str]:
    nc = await nats.connect(settings.nats_url)
    try:
        return {info.config.name for info in await nc.jetstream().streams_info()}
    finally:
        await nc.close()


async def test_concurrent_inits_all_succeed_and_set_everything_up(settings: Settings) -> None:
    with pytest.raises(NotInitialised, match="claimcheck init"):
        open_ledger(settings.ledger_url())

    inits = [start(settings, "init") for _ in range(4)]
    outputs = [process.communicate(timeout=90)[0] for process in inits]
    assert [process.returncode for process in inits] == [0, 0, 0, 0], outputs
    assert all("claimcheck is set up" in output for output in outputs), outputs

    open_ledger(settings.ledger_url()).close()  # every table is there now
    subjects = Subjects(settings.prefix)
    names = await stream_names(settings)
    for kind in ("events", "evidence", "handoff", "escalation", "deadletter"):
        assert subjects.stream(kind) in names
    assert f"KV_{subjects.journal_bucket}" in names
    assert f"OBJ_{subjects.artifact_bucket}" in names

    again = await run_init(settings)
    assert again.returncode == 0, again.stdout + again.stderr


async def test_runtime_refuses_to_start_before_init_then_serves_after(settings: Settings) -> None:
    before = start(settings, "runtime")
    output = before.communicate(timeout=60)[0]
    assert before.returncode == 1, output
    assert "claimcheck init" in output
    assert "IntegrityError" not in output and "Traceback" not in output

    init = await run_init(settings)
    assert init.returncode == 0, init.stdout + init.stderr
    runtimes = [start(settings, "runtime") for _ in range(2)]
    try:
        nc = await nats.connect(settings.nats_url)
        subject = Subjects(settings.prefix).runtime(OPERATOR, "state")
        deadline = time.monotonic() + 30
        while True:
            try:
                await nc.request(subject, b"{}", timeout=1)
                break
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                assert time.monotonic() < deadline, "no runtime answered"
                assert all(p.poll() is None for p in runtimes), [
                    p.communicate()[0] for p in runtimes if p.poll() is not None
                ]
        await nc.close()
        assert all(process.poll() is None for process in runtimes)
    finally:
        for process in runtimes:
            process.terminate()
        for process in runtimes:
            process.communicate(timeout=30)
