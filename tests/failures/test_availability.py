"""A tool host that is briefly unavailable is waited out, not counted as a failed tool.

The runtime runs here without a tool host; a real one (``claimcheck tools serve``, its own
OS process) starts a few seconds into the step.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime

import pytest

from agents import Context, RuntimeRefused, ScriptedModel
from bus.ledger import Ledger
from bus.ledger.relay import Relay
from bus.runtime.policy import Policy
from bus.runtime.registry import register
from bus.runtime.service import Runtime
from bus.settings import Settings
from bus.tools import complaints
from bus.transport.connection import connect, ensure_streams
from bus.transport.subjects import Subjects
from tests.conftest import Bus, run_workflow

TICKET = {"customer": "northwind", "title": "refund", "severity": "high"}


@pytest.fixture
async def runtime_only(settings: Settings, ledger: Ledger, policy: Policy) -> AsyncIterator[Bus]:
    """The runtime and its relay over the real nats-server, and no tool host at all."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    settings.tool_timeout = 1.0
    nc = await connect(settings, "test-runtime")
    subjects = Subjects(settings.prefix)
    await ensure_streams(nc.jetstream(), subjects)
    relay = Relay(ledger, nc, subjects, poll_interval=0.2)
    runtime = Runtime(settings, ledger, policy, nc, on_commit=relay.wake)
    await runtime.serve()
    relay_task = asyncio.create_task(relay.run())
    yield Bus(settings, nc, ledger, runtime, subjects)
    relay_task.cancel()
    await relay.close()
    await nc.drain()
    runtime.close()


async def start_tool_host(settings: Settings, delay: float) -> asyncio.subprocess.Process:
    await asyncio.sleep(delay)
    log = settings.state_dir / "tools.log"
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bus.operations.cli",
            "tools",
            "serve",
            stdout=out,
            stderr=out,
            env={**os.environ, **settings.as_environment()},
        )


def tickets(settings: Settings) -> int:
    with sqlite3.connect(settings.tickets_path()) as db:
        return db.execute("SELECT COUNT(*) FROM tickets").fetchone()[0]


async def file_ticket(ctx: Context) -> None:
    ticket = await ctx.tools.create_ticket(**TICKET)
    await ctx.summarize("filed", asserts="succeeded", evidence=[ticket.evidence])


async def test_a_tool_host_started_late_finishes_the_step_once(runtime_only: Bus) -> None:
    settings = runtime_only.settings
    settings.tool_availability_window = 30.0
    settings.request_timeout = 0.7  # the agent asks again while the runtime waits: one run
    host = asyncio.create_task(start_tool_host(settings, delay=2.5))
    try:
        view = await run_workflow(runtime_only, file_ticket, ScriptedModel([]))
    finally:
        process = await host
        process.terminate()
        await process.wait()
    assert view.status == "completed", view.outcome
    assert view.failures == []  # waited out, not a failed tool
    waits = view.tool_unavailable
    assert len(waits) >= 2, waits  # several attempts, each an event
    # no host has registered the tool yet (the runtime learns tools from their hosts);
    # a registered one whose host is away finds no responders
    assert {w["kind"] for w in waits} <= {"not_registered", "no_responders"}
    assert waits[0]["kind"] == "not_registered"
    registering = [w for w in waits if w["kind"] == "not_registered"]
    assert [w["attempt"] for w in registering] == list(range(1, len(registering) + 1))
    delays = [w["retry_in_seconds"] for w in registering]
    assert all(0.2 <= d <= 5.5 for d in delays) and delays[-1] > delays[0]  # backoff grows
    [execution] = view.tool_executions
    assert execution["attempt"] == len(waits) - len(registering) + 1
    assert tickets(settings) == 1
    history = [e.type for e in runtime_only.ledger.history(view.workflow_id)]
    assert history.count("ToolExecuted") == 1


async def test_after_the_window_the_failure_table_decides(runtime_only: Bus) -> None:
    settings = runtime_only.settings
    settings.tool_availability_window = 1.5
    # a host registered the tool and went away: the runtime knows it, nobody answers
    described = complaints.schemas().values()
    await register(runtime_only.nc.jetstream(), runtime_only.subjects, described)
    refusals: list[str] = []

    async def handler(ctx: Context) -> None:
        try:
            await ctx.tools.create_ticket(**TICKET)
        except RuntimeRefused as refused:
            refusals.append(f"{refused.code}:{refused.error.retry.strategy}")
            raise

    started = time.monotonic()
    view = await run_workflow(runtime_only, handler, ScriptedModel([]))
    assert time.monotonic() - started >= 1.0
    assert refusals == ["tool_error:fail"]
    assert view.status == "failed"  # the exhausted strategy ends the workflow, with the reason
    assert view.outcome.startswith("tool_error after 3 of 3 attempts: no tool host serves")
    waits = view.tool_unavailable
    assert waits and all(w["kind"] == "no_responders" for w in waits)
    window_ends = {datetime.fromisoformat(w["window_ends_at"]) for w in waits}
    assert len(window_ends) == 1  # one window for the step, named in every event
    assert [f["kind"] for f in view.failures] == ["tool_error"] * 3
    assert "ToolExecuted" not in [e.type for e in runtime_only.ledger.history(view.workflow_id)]
