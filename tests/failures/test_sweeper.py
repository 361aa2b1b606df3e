"""No workflow waits forever: the runtime's sweeper acts on workflows that nobody moves forward.

A real nats-server, the runtime (with its sweeper every 0.2 s) and an agent whose handler
acknowledges a handoff without finishing it: the case that left workflows ``running`` for
ever when an agent treated an error as final.
"""

from __future__ import annotations

import asyncio

import pytest

from agents import Agent, Context, RuntimeRefused, ScriptedModel
from bus.operations.operators import resolve, watch
from bus.runtime.policy import Deadlines
from bus.settings import Settings
from tests.conftest import Bus, Handler, run_workflow

POLICY = """
[[rules]]
name = "tickets"
actor = "triage"
action = "create_ticket"
resource = "ticket:*"
effect = "allow"

[deadlines]
step_lease_seconds = 1.0
"""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.sweep_interval = 0.2
    return settings


async def file_ticket(ctx: Context) -> None:
    ticket = await ctx.tools.create_ticket(customer="northwind", title="refund", severity="low")
    await ctx.summarize("filed", asserts="succeeded", evidence=[ticket.evidence])


def types(bus: Bus, workflow_id: str) -> list[str]:
    return [event.type for event in bus.ledger.history(workflow_id)]


async def test_a_stalled_step_is_delivered_again_and_finishes(bus: Bus) -> None:
    deliveries: list[str] = []

    async def gives_up_the_first_time(ctx: Context) -> None:
        deliveries.append(ctx.incoming.handoff_id)
        if len(deliveries) == 1:
            return  # acknowledged, nothing recorded: the workflow would wait for ever
        await file_ticket(ctx)

    view = await run_workflow(bus, gives_up_the_first_time, ScriptedModel([]))
    assert view.status == "completed"
    assert len(deliveries) == 2 and len(set(deliveries)) == 1  # the same handoff, again
    [stalled] = view.failures[:1]
    assert stalled["kind"] == "step_stalled"
    assert "no progress for" in stalled["detail"] and "waiting on triage" in stalled["detail"]
    history = types(bus, view.workflow_id)
    found = history.index("FailureClassified")
    assert history[found : found + 3] == ["FailureClassified", "RetryDecided", "WorkflowResumed"]


async def test_a_step_that_stays_stalled_is_escalated_and_a_human_can_resume_it(
    bus: Bus,
) -> None:
    deliveries: list[str] = []

    async def does_nothing_twice(ctx: Context) -> None:
        deliveries.append(ctx.incoming.handoff_id)
        if len(deliveries) > 2:
            await file_ticket(ctx)

    view = await run_workflow(bus, does_nothing_twice, ScriptedModel([]))
    assert view.status == "escalated"
    assert [f["kind"] for f in view.failures] == ["step_stalled", "step_stalled"]
    [escalation] = view.escalations
    assert escalation["kind"] == "step_stalled" and escalation["agent"] == "triage"
    assert view.waiting.startswith(f"a human: escalation {escalation['escalationId']}")
    assert len(deliveries) == 2

    assert await approve_and_finish(bus, does_nothing_twice, escalation["escalationId"]) == (
        "completed"
    )
    assert len(deliveries) == 3  # approval delivered the handoff again


async def approve_and_finish(bus: Bus, handler: Handler, escalation_id: str) -> str:
    """Approve the escalation with the triage agent running, and wait for the workflow to end."""
    agent = Agent("triage", model=ScriptedModel([]))
    agent.task("t")(handler)
    stop = asyncio.Event()
    runner = asyncio.create_task(agent.run(bus.settings, stop))
    try:
        resolved = await resolve(bus.nc, bus.subjects, escalation_id, "approve", "ops")
        view = await watch(
            bus.nc,
            bus.subjects,
            resolved["workflowId"],
            timeout=20,
            until=lambda v: v.status in ("completed", "failed"),
        )
        return view.status
    finally:
        stop.set()
        await runner


async def test_a_workflow_past_its_deadline_fails_with_the_reason(bus: Bus) -> None:
    bus.runtime.sweeper.policy = bus.runtime.sweeper.policy.model_copy(
        update={"deadlines": Deadlines(tasks={"t": 1.5}, step_lease_seconds=1.0)}
    )
    ended: list[str] = []

    async def busy_for_ever(ctx: Context) -> None:
        try:
            for n in range(100):  # progress (a checkpoint every 0.2 s), so never stalled
                await ctx.checkpoint(f"c{n}")
                await asyncio.sleep(0.2)
        except RuntimeRefused as refused:
            ended.append(refused.code)

    view = await run_workflow(bus, busy_for_ever, ScriptedModel([]))
    assert view.status == "failed"
    assert view.outcome.startswith("deadline_exceeded after 1 of 1 attempts: task 't' passed")
    assert [f["kind"] for f in view.failures] == ["deadline_exceeded"]
    assert ended == ["workflow_closed"]


async def test_a_workflow_waiting_for_a_signal_is_not_stalled_but_fails_at_its_deadline(
    bus: Bus,
) -> None:
    bus.runtime.sweeper.policy = bus.runtime.sweeper.policy.model_copy(
        update={"deadlines": Deadlines(tasks={"t": 3.0}, step_lease_seconds=0.5)}
    )

    async def waits(ctx: Context) -> None:
        await ctx.wait_for_signal("go")

    waiting = await run_workflow(
        bus, waits, ScriptedModel([]), until=lambda view: view.status == "waiting"
    )
    await asyncio.sleep(1.5)  # three step leases: a running workflow would be stalled by now
    assert types(bus, waiting.workflow_id)[-1] == "SignalAwaited"
    view = await watch(
        bus.nc, bus.subjects, waiting.workflow_id, 10, lambda view: view.status == "failed"
    )
    assert view.status == "failed"
    assert [f["kind"] for f in view.failures] == ["deadline_exceeded"]
