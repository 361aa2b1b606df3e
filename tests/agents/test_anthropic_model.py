"""AnthropicModel with the real ``anthropic`` client, against a local server that speaks the
Messages API: tool_use replies, per-agent settings, the cached prefix, repairs that show the
model its previous call, failed attempts classified, usage priced by model family."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest
from pydantic import BaseModel

from agents import Context
from agents.anthropic_model import AnthropicModel
from agents.model import ModelFailure, ModelRequest
from agents.model_settings import ModelSettingsError
from tests.agents.messages_api import (
    MessagesAPI,
    error,
    overloaded,
    rate_limited,
    refusal,
    tool_use,
)
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


def client_for(api: MessagesAPI, timeout: float = 5.0) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        api_key="test-key", base_url=api.url, timeout=timeout, max_retries=0
    )


def model_for(api: MessagesAPI, timeout: float = 5.0, model: str = "claude-test") -> AnthropicModel:
    return AnthropicModel(model=model, client=client_for(api, timeout))


REQUEST = ModelRequest("You triage complaints.", "Plan.", {"complaint": "refund"}, Plan)


async def test_a_tool_use_reply_is_the_structured_output(api: MessagesAPI) -> None:
    api.replies.append(tool_use("Plan", {"severity": "high", "escalate": True}))
    result = await model_for(api).complete(REQUEST)
    assert result.output == {"severity": "high", "escalate": True}
    assert (result.model, result.stop_reason) == ("claude-test", "tool_use")
    [sent] = api.requests
    assert sent["tools"] == [
        {
            "name": "Plan",
            "description": "Answer with a Plan.",
            "input_schema": Plan.model_json_schema(),
        }
    ]
    assert sent["tool_choice"] == {"type": "tool", "name": "Plan"}
    # The stable prefix (tool, system prompt, instructions) comes before the context. This
    # one is far too short for the API to cache, so it is not marked.
    assert sent["system"] == [
        {"type": "text", "text": "You triage complaints."},
        {"type": "text", "text": "Plan."},
    ]
    assert sent["messages"] == [{"role": "user", "content": '{\n  "complaint": "refund"\n}'}]


LONG_PROMPT = "You triage complaints for Acme. " * 150  # about 4,800 characters


@pytest.mark.parametrize(
    ("model", "marked"),
    [
        # Sonnet caches prefixes from 1,024 tokens: this one is long enough.
        ("claude-sonnet-4-6", True),
        # Haiku 4.5 needs 4,096 tokens: marking it would only pretend.
        ("claude-haiku-4-5-20251001", False),
    ],
)
async def test_the_stable_prefix_is_marked_for_caching_where_the_api_would_cache_it(
    api: MessagesAPI, model: str, marked: bool
) -> None:
    api.replies.append(tool_use("Plan", {"severity": "high", "escalate": True}, model=model))
    request = ModelRequest(LONG_PROMPT, "Plan.", {"complaint": "refund"}, Plan)
    await model_for(api, model=model).complete(request)
    [sent] = api.requests
    system = sent["system"]
    assert [block["text"] for block in system] == [LONG_PROMPT, "Plan."]
    # The breakpoint ends the prefix: tools and both system blocks are cached together.
    assert ("cache_control" in system[-1]) is marked
    assert "cache_control" not in system[0]
    assert all("cache_control" not in tool for tool in sent["tools"])


async def test_per_agent_model_settings_come_from_the_configuration(
    api: MessagesAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models.toml"
    models.write_text(
        "[default]\nmax_tokens = 700\n\n"
        '[agents.notifier]\nmodel = "claude-haiku-4-5"\ntemperature = 0.2\n'
        'effort = "low"\ntimeout = 7\n'
    )
    monkeypatch.setenv("CLAIMCHECK_MODELS", str(models))
    monkeypatch.setenv("CLAIMCHECK_MODEL", "claude-sonnet-4-6")
    api.replies += [tool_use("Plan", {"severity": "low", "escalate": False})] * 2
    notifier = AnthropicModel(agent="notifier", client=client_for(api))
    triage = AnthropicModel(agent="triage", client=client_for(api))
    assert notifier.settings.timeout == 7
    await notifier.complete(REQUEST)
    await triage.complete(REQUEST)
    first, second = api.requests
    assert (first["model"], first["max_tokens"], first["temperature"]) == (
        "claude-haiku-4-5",
        700,
        0.2,
    )
    assert first["output_config"] == {"effort": "low"}
    assert (second["model"], second["max_tokens"]) == ("claude-sonnet-4-6", 700)
    assert "temperature" not in second and "output_config" not in second  # the defaults


async def test_a_bad_model_settings_file_names_the_table_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models.toml"
    models.write_text("[agents.notifier]\nmax_token = 10\n")
    monkeypatch.setenv("CLAIMCHECK_MODELS", str(models))
    with pytest.raises(ModelSettingsError, match=r"\[agents.notifier\]: max_token: Extra inputs"):
        AnthropicModel(agent="notifier")
    models.write_text("[agents.notifier]\ntemperature = 3\n")
    with pytest.raises(ModelSettingsError, match="temperature: Input should be less than or equal"):
        AnthropicModel(agent="notifier")


async def test_a_repair_shows_the_model_its_previous_call_and_the_exact_errors(
    api: MessagesAPI,
) -> None:
    api.replies.append(tool_use("Plan", {"severity": "high", "escalate": True}))
    repair = ModelRequest(
        "You triage complaints.",
        "Plan.",
        {"complaint": "refund"},
        Plan,
        repair=["escalate: Field required"],
        previous={"severity": "high"},
        more_room=1,
    )
    await model_for(api).complete(repair)
    [sent] = api.requests
    assert sent["max_tokens"] == 2048  # cut off once: twice the room
    _context, previous, result = sent["messages"]
    assert previous == {
        "role": "assistant",
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_previous_answer",
                "name": "Plan",
                "input": {"severity": "high"},
            }
        ],
    }
    [tool_result] = result["content"]
    assert tool_result["tool_use_id"] == "toolu_previous_answer"
    assert tool_result["is_error"] is True
    assert "- escalate: Field required" in tool_result["content"]


async def test_the_stop_reason_and_the_limit_are_reported(api: MessagesAPI) -> None:
    api.replies += [
        tool_use("Plan", {"severity": "hi"}, stop_reason="max_tokens"),
        refusal(),
    ]
    cut = await model_for(api).complete(REQUEST)
    assert (cut.stop_reason, cut.max_tokens, cut.output) == ("max_tokens", 1024, {"severity": "hi"})
    refused = await model_for(api).complete(REQUEST)
    assert (refused.stop_reason, refused.output) == ("refusal", {})
    assert "can't help" in refused.text


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


# The adapter makes one attempt and classifies its failure; retrying is the runtime's
# decision now (tests/failures/test_model_failures.py), so every attempt is in the ledger.


async def test_an_overloaded_reply_is_a_transient_failure(api: MessagesAPI) -> None:
    api.replies.append(overloaded())
    with pytest.raises(ModelFailure) as raised:
        await model_for(api).complete(REQUEST)
    assert (raised.value.kind, raised.value.retry_after) == ("model_unavailable", None)
    assert "529" in raised.value.detail
    assert len(api.requests) == 1


async def test_a_rate_limit_carries_its_retry_after(api: MessagesAPI) -> None:
    api.replies.append(rate_limited(7))
    with pytest.raises(ModelFailure) as raised:
        await model_for(api).complete(REQUEST)
    assert (raised.value.kind, raised.value.retry_after) == ("model_unavailable", 7.0)


async def test_a_timeout_is_a_transient_failure(api: MessagesAPI) -> None:
    slow = tool_use("Plan", {"severity": "high", "escalate": True})
    slow.delay = 1.5
    api.replies.append(slow)
    with pytest.raises(ModelFailure, match="timeout") as raised:
        await model_for(api, timeout=0.5).complete(REQUEST)
    assert raised.value.transient


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, "authentication_error"),
        (403, "permission_error"),
        (400, "invalid_request_error"),
        (404, "not_found_error"),
    ],
)
async def test_authentication_permission_invalid_request_and_unknown_model_are_permanent(
    api: MessagesAPI, status: int, kind: str
) -> None:
    api.replies.append(error(status, kind, "no"))
    with pytest.raises(ModelFailure) as raised:
        await model_for(api).complete(REQUEST)
    assert raised.value.kind == "model_error"
    assert f"HTTP {status}" in raised.value.detail


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
    repair = api.requests[1]["messages"]
    assert repair[1]["content"][0]["input"] == {"severity": "high"}  # its own previous call
    assert "escalate: Field required" in repair[2]["content"][0]["content"]
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
