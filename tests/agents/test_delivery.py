"""Inbox delivery: dead letters, heartbeats during long reasoning, replicas as a work queue."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from pydantic import BaseModel

from agents import Agent, Context, ModelRequest, ModelResult, ScriptedModel
from bus.operations.operators import submit, watch
from bus.transport.connection import InboxConfig, ensure_inbox_consumer
from handoff_schemas import Usage
from tests.conftest import Bus


async def run_agents(
    bus: Bus, agents: list[Agent], workflows: int = 1, inbox: InboxConfig | None = None
) -> list[str]:
    """Run ``agents`` on ``workflows`` handed to triage, whose inbox delivers as ``inbox``
    says (the runtime makes inbox consumers; made first here, this one is kept)."""
    inbox = inbox or InboxConfig()
    await ensure_inbox_consumer(bus.nc.jetstream(), bus.subjects, "triage", inbox)
    settings = bus.settings.model_copy(update={"inbox_ack_wait": inbox.ack_wait})
    stop = asyncio.Event()
    runners = [asyncio.create_task(agent.run(settings, stop)) for agent in agents]
    try:
        started = [
            await submit(bus.nc, bus.subjects, "t", "triage", f"{i}".encode())
            for i in range(workflows)
        ]
        views = await asyncio.gather(
            *(watch(bus.nc, bus.subjects, s.workflow_id, timeout=30) for s in started)
        )
        return [view.status for view in views]
    finally:
        stop.set()
        await asyncio.gather(*runners)


async def test_a_handoff_that_fails_every_delivery_is_dead_lettered_and_recorded(bus: Bus) -> None:
    attempts = []
    agent = Agent("triage", model=ScriptedModel([]))

    @agent.task("t")
    async def broken(ctx: Context) -> None:
        attempts.append(ctx.incoming.handoff_id)
        raise RuntimeError("a bug in the handler")

    assert await run_agents(bus, [agent], inbox=InboxConfig(max_deliver=2)) == ["failed"]
    assert len(attempts) == 2
    letters = await bus.nc.jetstream().subscribe(
        bus.subjects.dead_letter("triage"), ordered_consumer=True
    )
    letter = json.loads((await letters.next_msg(timeout=5)).data)
    assert letter["type"] == "HandoffDeadLettered"
    assert letter["data"]["deliveries"] == 2
    history = [e.type for e in bus.ledger.history(letter["workflowId"])]
    assert history[-2:] == ["HandoffDeadLettered", "WorkflowFailed"]


class Decision(BaseModel):
    severity: str


class SlowModel:
    """Thinks for longer than the inbox's ack wait."""

    name = "slow"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    async def complete(self, request: ModelRequest) -> ModelResult:
        self.calls += 1
        await asyncio.sleep(self.seconds)
        return ModelResult(output={"severity": "low"}, usage=Usage(), model=self.name)


async def test_heartbeats_keep_a_long_reasoning_handoff_from_redelivery(bus: Bus) -> None:
    model = SlowModel(seconds=3.0)
    agent = Agent("triage", model=model)
    runs = []

    @agent.task("t")
    async def think(ctx: Context) -> None:
        runs.append(ctx.incoming.handoff_id)
        await ctx.reason("Decide.", {}, Decision)
        await ctx.summarize("decided", asserts="succeeded", evidence=[])

    statuses = await run_agents(bus, [agent], inbox=InboxConfig(ack_wait=1.0))
    assert statuses == ["escalated"]  # the claim cites nothing; what matters is below
    assert model.calls == 1 and len(runs) == 1


async def test_replicas_of_an_agent_share_its_inbox_as_a_work_queue(bus: Bus) -> None:
    handled: Counter[str] = Counter()
    replicas = []
    for replica in ("a", "b"):
        agent = Agent("triage", model=ScriptedModel([]))

        @agent.task("t")
        async def file(ctx: Context, replica: str = replica) -> None:
            handled[ctx.workflow_id] += 1
            ticket = await ctx.tools.create_ticket(customer=replica, title="t", severity="low")
            await ctx.summarize("filed", asserts="succeeded", evidence=[ticket.evidence])

        replicas.append(agent)
    statuses = await run_agents(bus, replicas, workflows=6)
    assert statuses == ["completed"] * 6
    assert sorted(handled.values()) == [1] * 6


async def test_an_agent_works_on_several_handoffs_at_once_up_to_its_concurrency(bus: Bus) -> None:
    agent = Agent("triage", model=ScriptedModel([]), concurrency=3)
    running, seen, three_at_once, all_six = 0, [], asyncio.Event(), asyncio.Event()

    @agent.task("t")
    async def slow(ctx: Context) -> None:
        nonlocal running
        running += 1
        seen.append(running)
        if running == 3:
            three_at_once.set()
        try:
            await asyncio.wait_for(three_at_once.wait(), 10)  # one at a time never gets here
            await asyncio.sleep(0.2)  # a fourth would be seen while these overlap
        finally:
            running -= 1
            if len(seen) == 6:
                all_six.set()

    stop = asyncio.Event()
    runner = asyncio.create_task(agent.run(bus.settings, stop))
    try:
        for i in range(6):
            await submit(bus.nc, bus.subjects, "t", "triage", f"{i}".encode())
        await asyncio.wait_for(all_six.wait(), 30)
    finally:
        stop.set()
        await runner
    assert max(seen) == 3
