"""Read models fed by the runner, exactly once, and rebuilt from position zero to the same view,
on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from eventsourcing.persistence import IntegrityError, Notification, Tracking
from pydantic import BaseModel

from agents import Context, ScriptedModel
from bus.ledger import Ledger
from bus.ledger.store import sqlite_or_postgres_env
from bus.ledger.view_runner import ViewRunner, open_views, rebuild_views
from bus.operations.bench.ledger_scale import bench_signer, governed_workflow
from bus.operations.operators import ask_runtime
from bus.settings import Settings
from handoff_schemas import ConfirmReply, ConfirmRequest, EventEnvelope, Usage
from projections.ledger_views import (
    VIEWED_EVENTS,
    claims,
    costs,
    dump,
    open_escalations,
    workflow_states,
)
from projections.views import SQLiteViews, ViewsBusy, ViewStore
from tests.conftest import Bus, run_workflow

POLICY = """
[[rules]]
name = "tickets"
actor = "triage"
action = "create_ticket"
resource = "ticket:*"
effect = "allow"

[prices.scripted]
input = 10.0

[tools.create_ticket]
cost_usd = 0.5
"""
ZLIB = "eventsourcing.compressor:ZlibCompressor"
CONSOLE_INDEXES = {"cc_console_started", "cc_console_status", "cc_console_agent"}


class Plan(BaseModel):
    severity: str


@pytest.fixture
async def live_views(bus: Bus) -> AsyncIterator[ViewStore]:
    """The views, fed live by a runner polling the ledger."""
    views = open_views(bus.settings)
    runner = ViewRunner(bus.ledger, views, poll_interval=0.2)
    task = asyncio.create_task(runner.run())
    yield views
    task.cancel()
    await runner.close()


async def caught_up(bus: Bus, views: ViewStore) -> None:
    last = bus.ledger.recorder.max_notification_id()
    async with asyncio.timeout(10):
        while (views.max_tracking_id(bus.ledger.name) or 0) < last:  # noqa: ASYNC110 (polls the views)
            await asyncio.sleep(0.05)


async def plan_and_file(ctx: Context) -> None:
    await ctx.reason("Plan.", {}, Plan)
    ticket = await ctx.tools.create_ticket(customer="c", title="t", severity="low")
    await ctx.checkpoint("filed", {"ticketId": ticket.evidence.refs["ticketId"]})
    await ctx.summarize("filed", asserts="succeeded", evidence=[ticket.evidence])


async def claims_nothing(ctx: Context) -> None:
    await ctx.summarize("done", asserts="succeeded", evidence=[])


async def run_some_workflows(bus: Bus) -> tuple[str, str]:
    model = ScriptedModel(lambda request: {"severity": "low"}, usage=Usage(input_tokens=1000))
    done = await run_workflow(bus, plan_and_file, model)
    escalated = await run_workflow(bus, claims_nothing, model)
    # verify --external: the ticket store is asked, and its answer recorded beside the evidence
    request = ConfirmRequest(workflow_id=done.workflow_id)
    await ask_runtime(bus.nc, bus.subjects, "confirm", request, ConfirmReply)
    return done.workflow_id, escalated.workflow_id


async def test_the_views_show_state_claims_costs_and_escalations(
    bus: Bus, live_views: ViewStore
) -> None:
    done, escalated = await run_some_workflows(bus)
    await caught_up(bus, live_views)
    states = {row["workflow_id"]: row for row in workflow_states(live_views)}
    assert states[done]["status"] == "completed"
    assert states[done]["checkpoints"] == {"filed": {"ticketId": "T-1"}}
    assert states[done]["completed_steps"] == 6
    assert states[done]["current_step"].endswith("(summarize)")
    assert states[done]["cost_usd"] == pytest.approx(0.51)
    [filed] = states[done]["claims"][0]["items"]
    assert (filed["verdict"], filed["world"]["outcome"]) == ("verified", "confirmed")
    assert states[done]["unconfirmed_evidence"] == {}
    assert states[escalated]["status"] == "escalated"
    assert [c["verdict"] for c in claims(live_views, unverified_only=True)] == ["unsupported"]
    assert len(claims(live_views)) == 2
    by_model = {row["model"]: row for row in costs(live_views, "model")}
    assert by_model["scripted"]["usd"] == pytest.approx(0.01)
    assert by_model["tool:create_ticket"]["usd"] == pytest.approx(0.5)
    assert [row["agent"] for row in costs(live_views, "agent")] == ["triage"]
    assert {row["workflow_id"] for row in costs(live_views, "workflow_id")} == {done}
    assert [e["workflow_id"] for e in open_escalations(live_views)] == [escalated]


async def test_a_rebuild_from_position_zero_gives_the_live_view(
    bus: Bus, live_views: ViewStore
) -> None:
    await run_some_workflows(bus)
    await caught_up(bus, live_views)
    live = dump(live_views)
    assert all(live.values())  # every view has rows to compare
    rebuild_views(bus.settings, bus.ledger)
    rebuilt = open_views(bus.settings, create=False)
    assert dump(rebuilt) == live
    assert index_names(rebuilt) >= CONSOLE_INDEXES


async def test_a_runner_decodes_only_the_events_a_view_reads(bus: Bus) -> None:
    await run_some_workflows(bus)
    runner = ViewRunner(bus.ledger, open_views(bus.settings))
    decoded: list[str] = []
    envelope = runner.envelope

    def counted(notification: Notification) -> EventEnvelope:
        read = envelope(notification)
        decoded.append(read.type)
        return read

    runner.envelope = counted  # type: ignore[method-assign]
    try:
        runner.catch_up()
    finally:
        runner.shutdown()
    recorded = {n.topic.rsplit(".", 1)[-1] for n in bus.ledger.notifications(0, 10_000)}
    assert {"EvidenceRecorded", "ActionRequested"} <= recorded - set(decoded)
    assert set(decoded) == recorded & VIEWED_EVENTS


def test_a_runner_decodes_every_event_the_fast_reader_cannot_name(tmp_path: Path) -> None:
    """A compressed ledger is read through eventsourcing's mapper, which names no event
    before decoding it: none may be skipped, or its views stay empty."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    compressed = {**sqlite_or_postgres_env(url), "COMPRESSOR_TOPIC": ZLIB}
    ledger = Ledger(env=compressed)
    try:
        ledger.save(governed_workflow(bench_signer()))
        views = open_views(Settings(state_dir=tmp_path, ledger=url))
        runner = ViewRunner(ledger, views)
        assert runner.reader.event_name(ledger.notifications(0)[0].topic) is None
        try:
            runner.catch_up()
        finally:
            runner.shutdown()
        [state] = workflow_states(views)
        assert state["checkpoints"] == {"filed": {"tickets": 2}} and len(state["claims"]) == 1
    finally:
        ledger.close()


async def test_a_runner_builds_the_indexes_a_killed_rebuild_left_missing(bus: Bus) -> None:
    views = open_views(bus.settings)
    for index in CONSOLE_INDEXES:
        views.execute(f"DROP INDEX {index}")  # as a rebuild killed before its end leaves them
    assert not index_names(views) & CONSOLE_INDEXES
    runner = ViewRunner(bus.ledger, open_views(bus.settings, create=False), poll_interval=0.2)
    task = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(10):
            while not index_names(views) >= CONSOLE_INDEXES:  # noqa: ASYNC110 (polls the views)
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await runner.close()


async def catch_ups_while_woken(bus: Bus, settle: float, wakes: int = 200) -> tuple[int, float]:
    """How often a live runner applied while woken every millisecond (as by commits), and
    over how many seconds."""
    runner = ViewRunner(bus.ledger, open_views(bus.settings), settle=settle)
    applied = 0
    catch_up = runner.catch_up

    def counted() -> int:
        nonlocal applied
        applied += 1
        return catch_up()

    runner.catch_up = counted  # type: ignore[method-assign]
    task = asyncio.create_task(runner.run())
    started = time.monotonic()
    try:
        for _ in range(wakes):
            runner.wake()
            await asyncio.sleep(0.001)
    finally:
        task.cancel()
        await runner.close()
    return applied, time.monotonic() - started


async def test_a_live_runner_lets_commits_gather_before_it_applies_again(bus: Bus) -> None:
    settled, seconds = await catch_ups_while_woken(bus, settle=0.05)
    eager, _ = await catch_ups_while_woken(bus, settle=0)
    print(f"{settled} catch-ups in {seconds:.2f} s settling 50 ms, {eager} without")
    assert settled <= seconds / 0.05 + 1 < eager, (settled, seconds, eager)


def index_names(views: ViewStore) -> set[str]:
    """The indexes of the views' tables (built at the end of a rebuild)."""
    if isinstance(views, SQLiteViews):
        rows = views.query("SELECT name FROM sqlite_master WHERE type = 'index'")
        return {row["name"] for row in rows}
    rows = views.query("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
    return {row["indexname"] for row in rows}


async def test_each_event_is_applied_exactly_once(bus: Bus, live_views: ViewStore) -> None:
    await run_some_workflows(bus)
    await caught_up(bus, live_views)
    before = dump(live_views)
    notification = bus.ledger.notifications(0)[-1]
    runner = ViewRunner(bus.ledger, live_views)
    envelope = bus.ledger.envelope(bus.ledger.mapper.to_domain_event(notification), notification.id)
    # SQLite refuses it on the tracking record; PostgreSQL before writing, as the views
    # are past it
    with pytest.raises((IntegrityError, ViewsBusy)):
        runner.projection.process_event(envelope, Tracking(bus.ledger.name, notification.id))
    runner.catch_up()  # a second runner over the same views adds nothing
    assert dump(live_views) == before


async def test_a_batch_overlapping_another_runners_work_counts_each_event_once(
    bus: Bus, live_views: ViewStore
) -> None:
    await run_some_workflows(bus)
    await caught_up(bus, live_views)
    before = dump(live_views)
    runner = ViewRunner(bus.ledger, live_views)
    runner.views = Behind(live_views)  # type: ignore[assignment]
    runner.catch_up(batch_size=7)  # every batch overlaps: it falls back to one event at a time
    assert dump(live_views) == before


class Behind:
    """Views that say they saw nothing: a runner that started with a stale position."""

    def __init__(self, views: ViewStore) -> None:
        self.views = views

    def max_tracking_id(self, application_name: str) -> int:
        return 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.views, name)
