"""AnthropicModel with the real ``anthropic`` client, against a local server that speaks the
Messages API: tool_use replies, repair of invalid output, overload and timeout retries, usage."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest
from pydantic import BaseModel

from agents import Context
from agents.anthropic_model import AnthropicModel, ModelUnavailable
from agents.model import ModelRequest
from tests.agents.messages_api import MessagesAPI, Reply, overloaded, tool_use
from tests.conftest import Bus, run_workflow

POLICY = """
[[rules]]
name = "tickets"
actor = "triage"
action = "create_ticket"
resource = "ticket:*"
effect = "allow"

[prices.claude-test]   # USD per million tokens
input = 3.0
output = 15.0
cache_read = 0.3
cache_write = 3.75
"""


class Plan(BaseModel):
    severity: str
    escalate: bool


@pytest.fixture
def api() -> Iterator[MessagesAPI]:
    server = MessagesAPI()
    server.start()
    yield server
    server.stop()


def model_for(api: MessagesAPI, timeout: float = 5.0, max_attempts: int = 3) -> AnthropicModel:
    client = anthropic.AsyncAnthropic(
        api_key="test-key", base_url=api.url, timeout=timeout, max_retries=0
    )
    return AnthropicModel(
        model="claude-test", client=client, max_attempts=max_attempts, backoff_seconds=0.05
    )


REQUEST = ModelRequest("You triage complaints.", "Plan.", {"complaint": "refund"}, Plan)


async def test_a_tool_use_reply_is_the_structured_output(api: MessagesAPI) -> None:
    api.replies.append(tool_use("Plan", {"severity": "high", "escalate": True}))
    result = await model_for(api).complete(REQUEST)
    assert result.output == {"severity": "high", "escalate": True}
    assert result.model == "claude-test"
    [sent] = api.requests
    assert sent["tools"] == [
        {
            "name": "Plan",
            "description": "Answer with a Plan.",
            "input_schema": Plan.model_json_schema(),
        }
    ]
    assert sent["tool_choice"] == {"type": "tool", "name": "Plan"}
    assert sent["system"] == [
        {"type": "text", "text": "You triage complaints.", "cache_control": {"type": "ephemeral"}}
    ]
    assert '"complaint": "refund"' in sent["messages"][0]["content"]


async def test_usage_includes_cache_tokens(api: MessagesAPI) -> None:
    api.replies.append(
        tool_use(
            "Plan",
            {"severity": "low", "escalate": False},
            input_tokens=1000,
            output_tokens=200,
            cache_read=5000,
            cache_write=800,
        )
    )
    usage = (await model_for(api).complete(REQUEST)).usage
    assert (usage.input_tokens, usage.output_tokens) == (1000, 200)
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (5000, 800)


async def test_an_overloaded_reply_is_retried(api: MessagesAPI) -> None:
    api.replies += [
        overloaded(),
        overloaded(),
        tool_use("Plan", {"severity": "low", "escalate": False}),
    ]
    result = await model_for(api, max_attempts=3).complete(REQUEST)
    assert result.output["severity"] == "low"
    assert len(api.requests) == 3


async def test_a_rate_limit_past_the_attempts_is_model_unavailable(api: MessagesAPI) -> None:
    limited = Reply(
        429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    )
    api.replies += [limited, limited]
    with pytest.raises(ModelUnavailable, match="after 2 attempts"):
        await model_for(api, max_attempts=2).complete(REQUEST)


async def test_a_timeout_is_retried(api: MessagesAPI) -> None:
    slow = tool_use("Plan", {"severity": "high", "escalate": True})
    slow.delay = 1.5
    api.replies += [slow, tool_use("Plan", {"severity": "low", "escalate": False})]
    result = await model_for(api, timeout=0.5).complete(REQUEST)
    assert result.output["severity"] == "low"
    assert len(api.requests) == 2


async def test_invalid_output_is_repaired_and_every_call_is_priced(
    bus: Bus, api: MessagesAPI
) -> None:
    api.replies += [
        tool_use("Plan", {"severity": "high"}, input_tokens=1000, output_tokens=100),  # no escalate
        tool_use(
            "Plan",
            {"severity": "high", "escalate": True},
            input_tokens=1200,
            output_tokens=100,
            cache_read=2000,
            cache_write=500,
        ),
    ]
    plans: list[Plan] = []

    async def plan(ctx: Context) -> None:
        plans.append(await ctx.reason("Plan.", {"complaint": "refund"}, Plan))
        ticket = await ctx.tools.create_ticket(customer="c", title="t", severity="high")
        await ctx.summarize("filed", asserts="succeeded", evidence=[ticket.evidence])

    view = await run_workflow(bus, plan, model_for(api))
    assert view.status == "completed"
    assert plans == [Plan(severity="high", escalate=True)]
    assert "escalate: Field required" in api.requests[1]["messages"][0]["content"]
    history = bus.ledger.history(view.workflow_id)
    reasoning = [e.data for e in history if e.type == "ReasoningRecorded"]
    assert [r["model"] for r in reasoning] == ["claude-test", "claude-test"]
    first = (1000 * 3.0 + 100 * 15.0) / 1e6
    second = (1200 * 3.0 + 100 * 15.0 + 2000 * 0.3 + 500 * 3.75) / 1e6
    assert [r["cost_usd"] for r in reasoning] == [pytest.approx(first), pytest.approx(second)]
    assert reasoning[1]["usage"]["cacheReadTokens"] == 2000
    assert [e.data["kind"] for e in history if e.type == "FailureClassified"] == [
        "invalid_tool_payload"
    ]
    assert bus.ledger.workflow(view.workflow_id).cost_usd == pytest.approx(first + second)
