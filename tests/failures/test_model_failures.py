"""Model calls governed like tools: every failed attempt is an event, the runtime decides.

The real ``anthropic`` client talks to the local Messages API server, which answers
529, 429 with ``retry-after``, 401 and 400, answers cut off at ``max_tokens`` and
refusals; the runtime and the agent run on the real nats-server and ledger (the ``bus``
fixture). ``claimcheck demo`` runs as a user runs
it, every part its own process, against a model nobody listens for.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest
from pydantic import BaseModel

from agents import Context
from agents.anthropic_model import AnthropicModel
from bus.ledger import Ledger
from bus.operations.operators import resolve, submit, watch
from bus.operations.stack import StateLock
from projections.trace import timeline
from tests.agents.messages_api import (
    MessagesAPI,
    error,
    overloaded,
    rate_limited,
    refusal,
    tool_use,
)
from tests.conftest import Bus, claimcheck, run_workflow, running_agent

POLICY = """
[[rules]]
name = "tickets"
actor = "triage"
action = "create_ticket"
resource = "ticket:*"
effect = "allow"

[failures.model_unavailable]
strategy = "retry"
max_attempts = 20
backoff_seconds = 0.1
exhausted = "fail"

[failures.model_error]
strategy = "fail"
"""


class Plan(BaseModel):
    severity: str


@pytest.fixture
def api() -> Iterator[MessagesAPI]:
    server = MessagesAPI()
    server.start()
    yield server
    server.stop()


def model_at(url: str, model: str = "claude-test") -> AnthropicModel:
    client = anthropic.AsyncAnthropic(api_key="test-key", base_url=url, timeout=2, max_retries=0)
    return AnthropicModel(model=model, client=client)


async def plan_and_file(ctx: Context) -> None:
    plan = await ctx.reason("Plan.", {"complaint": "refund"}, Plan)
    ticket = await ctx.tools.create_ticket(customer="c", title="t", severity=plan.severity)
    await ctx.summarize("filed", asserts="succeeded", evidence=[ticket.evidence])


def events(bus: Bus, workflow_id: str, kind: str) -> list[dict]:
    return [e.data for e in bus.ledger.history(workflow_id) if e.type == kind]


async def test_overload_and_rate_limit_are_retried_honouring_retry_after(
    bus: Bus, api: MessagesAPI
) -> None:
    api.replies += [overloaded(), rate_limited(1.5), tool_use("Plan", {"severity": "high"})]
    started = time.monotonic()
    view = await run_workflow(bus, plan_and_file, model_at(api.url))
    assert view.status == "completed"
    assert len(api.requests) == 3
    assert time.monotonic() - started >= 1.5  # the retry-after was honoured
    failures = events(bus, view.workflow_id, "FailureClassified")
    assert [f["kind"] for f in failures] == ["model_unavailable", "model_unavailable"]
    assert "HTTP 529" in failures[0]["detail"] and "HTTP 429" in failures[1]["detail"]
    waits = events(bus, view.workflow_id, "ModelUnavailable")
    assert [w["attempt"] for w in waits] == [1, 2]
    assert waits[1]["retry_after_seconds"] == 1.5
    assert 1.5 <= waits[1]["retry_in_seconds"] <= 1.5 * 1.25
    assert waits[0]["window_ends_at"] == waits[1]["window_ends_at"]  # one window per handling
    decisions = events(bus, view.workflow_id, "RetryDecided")
    assert [d["decision"]["strategy"] for d in decisions] == ["retry", "retry"]
    assert len(events(bus, view.workflow_id, "ReasoningRecorded")) == 1
    lines = timeline(bus.ledger.history(view.workflow_id))
    assert any("retry-after 1.5 s" in line for line in lines)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, "authentication_error"), (400, "invalid_request_error"), (404, "not_found_error")],
)
async def test_a_permanent_model_error_fails_the_workflow_at_once(
    bus: Bus, api: MessagesAPI, status: int, kind: str
) -> None:
    api.replies.append(error(status, kind, f"the {kind} text"))
    started = time.monotonic()
    view = await run_workflow(bus, plan_and_file, model_at(api.url))
    assert time.monotonic() - started < 5
    assert view.status == "failed"
    assert f"HTTP {status}" in view.outcome and f"the {kind} text" in view.outcome
    assert view.outcome.startswith("model_error")
    assert len(api.requests) == 1  # never asked again
    assert not events(bus, view.workflow_id, "ToolExecuted")


async def test_an_unreachable_model_fails_when_its_window_is_over(bus: Bus) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    bus.settings.model_availability_window = 1.5
    started = time.monotonic()
    view = await run_workflow(bus, plan_and_file, model_at(url))
    elapsed = time.monotonic() - started
    assert view.status == "failed"
    assert "availability window" in view.outcome and "connection error" in view.outcome
    assert 1.0 <= elapsed < 6
    waits = events(bus, view.workflow_id, "ModelUnavailable")
    failures = events(bus, view.workflow_id, "FailureClassified")
    assert len(failures) == len(waits) + 1 >= 3  # each attempt an event, the last one fails
    assert events(bus, view.workflow_id, "RetryDecided")[-1]["decision"]["strategy"] == "fail"


async def test_a_redelivered_handling_does_not_ask_again_for_recorded_failures(
    bus: Bus, api: MessagesAPI
) -> None:
    """A failed attempt is a recorded step: replayed, it is passed over, not re-asked."""
    api.replies += [overloaded(), tool_use("Plan", {"severity": "low"})]
    crashed = False

    async def crash_once(ctx: Context) -> None:
        nonlocal crashed
        plan = await ctx.reason("Plan.", {"complaint": "refund"}, Plan)
        if not crashed:
            crashed = True
            raise RuntimeError("the agent crashed after the model answered")
        ticket = await ctx.tools.create_ticket(customer="c", title="t", severity=plan.severity)
        await ctx.summarize("filed", asserts="succeeded", evidence=[ticket.evidence])

    view = await run_workflow(bus, crash_once, model_at(api.url))
    assert view.status == "completed"
    assert len(api.requests) == 2
    assert len(events(bus, view.workflow_id, "FailureClassified")) == 1


def test_the_demo_with_an_unreachable_model_says_why_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    state_dir = tmp_path / "demo"
    started = time.monotonic()
    demo = claimcheck(
        "demo",
        state_dir=state_dir,
        env={"ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": url},
        timeout=120,
    )
    print(f"claimcheck demo took {time.monotonic() - started:.1f} s")
    assert demo.returncode == 1, demo.stdout + demo.stderr
    assert "connection error" in demo.stdout and "availability window" in demo.stdout
    assert StateLock(state_dir).holder() is None  # the stack and its children are gone
    assert not (state_dir / "nats.url").exists()
    ledger = Ledger.from_url(f"sqlite:///{state_dir / 'ledger.db'}")
    try:
        histories = [ledger.history(wf) for wf in ledger.workflow_ids()]
    finally:
        ledger.close()
    assert len(histories) == 3
    for history in histories:  # nothing left running, each failed soon after it started
        [failed] = [e for e in history if e.type == "WorkflowFailed"]
        assert "connection error" in failed.data["reason"]
        took = (failed.timestamp - history[0].timestamp).total_seconds()
        print(f"a workflow failed {took:.1f} s after it started")
        assert took < 30  # 2 s of model window each, behind agents starting on a busy machine


# -- why the model stopped ---------------------------------------------------------------

DATED = "claude-sonnet-4-5-20250929"
"""A dated model name, as the API reports it: priced by its family, claude-sonnet-4."""


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK warns about this model
async def test_a_cut_off_answer_is_asked_again_with_more_room_and_every_call_is_priced(
    bus: Bus, api: MessagesAPI
) -> None:
    api.replies += [
        tool_use("Plan", {}, 1000, 1024, stop_reason="max_tokens", model=DATED, cache_write=3000),
        tool_use("Plan", {"severity": "high"}, 1100, 300, cache_read=3000, model=DATED),
    ]
    view = await run_workflow(bus, plan_and_file, model_at(api.url, DATED))
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


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_an_answer_that_keeps_running_out_of_room_goes_to_a_human(
    bus: Bus, api: MessagesAPI
) -> None:
    api.replies += [tool_use("Plan", {}, stop_reason="max_tokens", model=DATED)] * 3
    view = await run_workflow(bus, plan_and_file, model_at(api.url, DATED))
    assert view.status == "escalated"
    assert [r["max_tokens"] for r in api.requests] == [1024, 2048, 4096]
    assert [e["kind"] for e in view.escalations] == ["model_truncated"]
    assert events(bus, view.workflow_id, "ToolExecuted") == []


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_a_refusal_escalates_and_an_approval_asks_the_model_again(
    bus: Bus, api: MessagesAPI
) -> None:
    api.replies += [refusal(model=DATED), tool_use("Plan", {"severity": "low"}, model=DATED)]
    async with running_agent(bus, plan_and_file, model_at(api.url, DATED)):
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
    assert done.status == "completed"
    assert len(api.requests) == 2
    assert [e["kind"] for e in events(bus, reply.workflow_id, "FailureClassified")] == [
        "model_refused"
    ]
