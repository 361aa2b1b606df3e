"""Why the model stopped, governed: an answer cut off at its token limit is asked for again
with more room (and goes to a human if it keeps running out), a refusal escalates and an
approval asks once more. The real ``anthropic`` client talks to the local Messages API
server; the runtime and the agent run on the real nats-server and ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import anthropic
import pytest
from pydantic import BaseModel

from agents import Agent, Context
from agents.anthropic_model import AnthropicModel
from bus.operations.operators import resolve, submit, watch
from projections.trace import timeline
from tests.agents.messages_api import MessagesAPI, refusal, tool_use
from tests.conftest import Bus, run_workflow

POLICY = """
[[rules]]
name = "tickets"
actor = "triage"
action = "create_ticket"
resource = "ticket:*"
effect = "allow"
"""

DATED = "claude-sonnet-4-5-20250929"
"""A dated model name, as the API reports it: priced by its family, claude-sonnet-4."""

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK on old models


class Plan(BaseModel):
    severity: str


@pytest.fixture
def api() -> Iterator[MessagesAPI]:
    server = MessagesAPI()
    server.start()
    yield server
    server.stop()


def model_at(api: MessagesAPI) -> AnthropicModel:
    client = anthropic.AsyncAnthropic(
        api_key="test-key", base_url=api.url, timeout=5, max_retries=0
    )
    return AnthropicModel(model=DATED, client=client)


async def plan_and_file(ctx: Context) -> None:
    plan = await ctx.reason("Plan.", {"complaint": "refund"}, Plan)
    ticket = await ctx.tools.create_ticket(customer="c", title="t", severity=plan.severity)
    await ctx.summarize("filed", asserts="succeeded", evidence=[ticket.evidence])


def events(bus: Bus, workflow_id: str, kind: str) -> list[dict]:
    return [e.data for e in bus.ledger.history(workflow_id) if e.type == kind]


async def test_a_cut_off_answer_is_asked_again_with_more_room_and_every_call_is_priced(
    bus: Bus, api: MessagesAPI
) -> None:
    api.replies += [
        tool_use("Plan", {}, 1000, 1024, stop_reason="max_tokens", model=DATED, cache_write=3000),
        tool_use("Plan", {"severity": "high"}, 1100, 300, cache_read=3000, model=DATED),
    ]
    view = await run_workflow(bus, plan_and_file, model_at(api))
    assert view.status == "completed"
    first, second = api.requests
    assert (first["max_tokens"], second["max_tokens"]) == (1024, 2048)
    # The retry shows the model what it had written when it was cut off.
    assert second["messages"][1]["content"][0]["input"] == {}
    assert "cut off" in second["messages"][2]["content"][0]["content"]
    [failure] = events(bus, view.workflow_id, "FailureClassified")
    assert failure["kind"] == "model_truncated"
    reasoning = events(bus, view.workflow_id, "ReasoningRecorded")
    assert [r["model"] for r in reasoning] == [DATED, DATED]
    # Sonnet 4 family prices, from the API's own usage, cache writes and reads included.
    cut = (1000 * 3.0 + 1024 * 15.0 + 3000 * 3.75) / 1e6
    whole = (1100 * 3.0 + 300 * 15.0 + 3000 * 0.30) / 1e6
    assert [r["cost_usd"] for r in reasoning] == [pytest.approx(cut), pytest.approx(whole)]
    lines = timeline(bus.ledger.history(view.workflow_id))
    assert any("(cache: 0 read, 3000 written)" in line for line in lines)
    assert any("(cache: 3000 read, 0 written)" in line for line in lines)  # the hit, visible
    assert any("failure model_truncated" in line for line in lines)


async def test_an_answer_that_keeps_running_out_of_room_goes_to_a_human(
    bus: Bus, api: MessagesAPI
) -> None:
    api.replies += [tool_use("Plan", {}, stop_reason="max_tokens", model=DATED)] * 3
    view = await run_workflow(bus, plan_and_file, model_at(api))
    assert view.status == "escalated"
    assert [r["max_tokens"] for r in api.requests] == [1024, 2048, 4096]
    assert [e["kind"] for e in view.escalations] == ["model_truncated"]
    assert events(bus, view.workflow_id, "ToolExecuted") == []


async def test_a_refusal_escalates_and_an_approval_asks_the_model_again(
    bus: Bus, api: MessagesAPI
) -> None:
    api.replies += [refusal(model=DATED), tool_use("Plan", {"severity": "low"}, model=DATED)]
    agent = Agent("triage", model=model_at(api))
    agent.task("t")(plan_and_file)
    stop = asyncio.Event()
    runner = asyncio.create_task(agent.run(bus.settings, stop))
    try:
        reply = await submit(bus.nc, bus.subjects, "t", "triage", b"{}")
        waiting = await watch(bus.nc, bus.subjects, reply.workflow_id)
        assert waiting.status == "escalated"
        [escalation] = waiting.escalations
        assert escalation["kind"] == "model_refused"
        assert len(api.requests) == 1  # nothing asked again before a human decided
        await resolve(bus.nc, bus.subjects, escalation["escalationId"], "approve", "dana")
        done = await watch(
            bus.nc, bus.subjects, reply.workflow_id, until=lambda view: view.status == "completed"
        )
    finally:
        stop.set()
        await runner
    assert done.status == "completed"
    assert len(api.requests) == 2
    assert [e["kind"] for e in events(bus, reply.workflow_id, "FailureClassified")] == [
        "model_refused"
    ]
