"""The failure table, budgets, permission conditions and escalations, each proven by the events
it records. A real nats-server, the runtime and the real tool host (with a ticket tool whose next
calls can be made slow or failing), and an agent whose model is scripted by the test."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from typing import ClassVar

import pytest
from pydantic import BaseModel

from agents import Agent, Context, RuntimeRefused, ScriptedModel
from bus.operations.mailbox import Mailbox
from bus.operations.operators import resolve, submit, watch
from bus.runtime.catalogue import Call, Catalogue, ToolFailure
from bus.tools import send_email
from bus.tools.tickets import Filed, Ticket, create_ticket
from handoff_schemas import Usage
from projections import WorkflowView
from tests.conftest import Bus, run_workflow

POLICY = """
[[rules]]
name = "tickets"
actor = "triage"
action = "create_ticket"
resource = "ticket:*"
effect = "allow"

[[rules]]
name = "press-needs-approval"
actor = "triage"
action = "send_email"
resource = "mailto:press@*"
effect = "allow"
require_approval = true

[[rules]]
name = "one-internal-email"
actor = "triage"
action = "send_email"
resource = "mailto:*@acme.example"
effect = "allow"
max_calls = 1

[failures.tool_timeout]
strategy = "retry"
max_attempts = 3
backoff_seconds = 0.05
exhausted = "fail"

[failures.tool_error]
strategy = "retry"
max_attempts = 2
backoff_seconds = 0.05
exhausted = "fail"

[failures.invalid_tool_payload]
strategy = "repair"
max_attempts = 3

[failures.bad_reasoning]
strategy = "replan"
max_attempts = 2

[budget]
default_usd = 1.0

[prices.scripted]
input = 10.0   # 1000 input tokens cost 0.01 USD
"""

CALL = Usage(input_tokens=1000)
"""Each scripted model call in this module costs 0.01 USD."""


class ScriptedTicket:
    """The real ticket tool, whose next calls can be told to be slow or to fail first."""

    behaviours: ClassVar[list[str]] = []
    slow_seconds: ClassVar[float] = 1.0

    @classmethod
    async def run(cls, ticket: Ticket, call: Call) -> Filed:
        behaviour = cls.behaviours.pop(0) if cls.behaviours else "ok"
        if behaviour == "slow":
            await asyncio.sleep(cls.slow_seconds)
        elif behaviour == "transient":
            raise ToolFailure("database is locked", transient=True)
        elif behaviour == "broken":
            raise ToolFailure("no such customer", transient=False)
        return await create_ticket.function(ticket, call)


@pytest.fixture
def catalogue() -> Catalogue:
    ScriptedTicket.behaviours = []
    ScriptedTicket.slow_seconds = 1.0
    scripted = dataclasses.replace(create_ticket, function=ScriptedTicket.run)
    return Catalogue("scripted", [scripted, send_email])


def types(bus: Bus, view: WorkflowView, after: str | None = None) -> list[str]:
    """The workflow's event types, from the first ``after`` event on."""
    found = [event.type for event in bus.ledger.history(view.workflow_id)]
    return found[found.index(after) :] if after else found


def tickets(bus: Bus) -> int:
    """Rows in the ticket tool's real table: the side effects that happened."""
    path = bus.settings.tickets_path()
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM tickets").fetchone()[0]


TICKET = {"customer": "northwind", "title": "refund", "severity": "high"}


async def file_ticket(ctx: Context) -> None:
    ticket = await ctx.tools.create_ticket(**TICKET)
    await ctx.summarize("filed", asserts="succeeded", evidence=[ticket.evidence])


# -- tool failures: the runtime retries --------------------------------------------------------


async def test_a_tool_timeout_is_retried_with_the_same_key_and_acts_once(bus: Bus) -> None:
    bus.settings.tool_timeout = 0.6
    bus.settings.tool_availability_window = 0.01  # over at once: the failure table decides
    ScriptedTicket.behaviours = ["slow"]  # the first call answers after 1 s, past the timeout
    view = await run_workflow(bus, file_ticket, ScriptedModel([]))
    assert view.status == "completed"
    assert types(bus, view, after="ActionRequested")[:7] == [
        "ActionRequested",
        "PermissionDecided",
        "FailureClassified",
        "RetryDecided",
        "ToolExecuted",
        "EvidenceRecorded",
        "StepCompleted",
    ]
    assert view.failures[0]["kind"] == "tool_timeout"
    assert view.tool_executions[0]["attempt"] == 2
    assert tickets(bus) == 1  # the slow first call and its retry made one ticket


async def test_a_tool_that_keeps_timing_out_fails_the_step(bus: Bus) -> None:
    bus.settings.tool_timeout = 0.2
    bus.settings.tool_availability_window = 0.01  # over at once: the failure table decides
    ScriptedTicket.slow_seconds = 2.0  # slower than all three attempts together
    ScriptedTicket.behaviours = ["slow"]
    outcomes: list[str] = []

    async def handler(ctx: Context) -> None:
        try:
            await ctx.tools.create_ticket(**TICKET)
        except RuntimeRefused as refused:
            outcomes.append(f"{refused.code}:{refused.error.retry.strategy}")
            await ctx.summarize("could not file", asserts="failed", evidence=[])

    view = await run_workflow(bus, handler, ScriptedModel([]))
    assert outcomes == ["tool_timeout:fail"]
    retries = [
        e.data["decision"]["strategy"]
        for e in bus.ledger.history(view.workflow_id)
        if e.type == "RetryDecided"
    ]
    assert retries == ["retry", "retry", "fail"]
    assert "ToolExecuted" not in types(bus, view)


async def test_a_transient_tool_error_is_retried(bus: Bus) -> None:
    ScriptedTicket.behaviours = ["transient"]
    view = await run_workflow(bus, file_ticket, ScriptedModel([]))
    assert view.status == "completed"
    assert [f["kind"] for f in view.failures] == ["tool_error"]
    assert view.tool_executions[0]["attempt"] == 2
    assert tickets(bus) == 1


async def test_a_permanent_tool_error_fails_the_step_with_failed_evidence(bus: Bus) -> None:
    ScriptedTicket.behaviours = ["broken"]

    async def claims_success_anyway(ctx: Context) -> None:
        ticket = await ctx.tools.create_ticket(**TICKET)
        await ctx.summarize("filed", asserts="succeeded", evidence=[ticket.evidence])

    view = await run_workflow(bus, claims_success_anyway, ScriptedModel([]))
    # not retried (the tool said it is not transient); only the false claim is a failure
    assert [f["kind"] for f in view.failures] == ["unverified_claim"]
    assert [e["status"] for e in view.evidence] == ["failed"]
    assert view.claims[0]["verdict"] == "contradicted"
    assert view.status == "escalated"
    assert tickets(bus) == 0


# -- model failures: repair, replan, within limits and budget -----------------------------------


async def act_on_ticket(ctx: Context) -> None:
    ticket = await ctx.act(create_ticket, "File a ticket for this complaint.", {"complaint": "x"})
    await ctx.summarize("filed", asserts="succeeded", evidence=[ticket.evidence])


async def test_an_invalid_payload_is_repaired_by_the_model(bus: Bus) -> None:
    model = ScriptedModel([{"customer": "northwind", "severity": "urgent"}, TICKET], usage=CALL)
    view = await run_workflow(bus, act_on_ticket, model)
    assert view.status == "completed"
    assert len(model.calls) == 2
    assert model.calls[0].repair == []
    assert set(model.calls[1].repair) == {
        "title: Field required",
        "severity: 'urgent' is not one of ['low', 'medium', 'high', 'critical']",
    }  # the runtime checks the JSON Schema the tool host registered
    assert types(bus, view, after="ReasoningRecorded") == [
        "ReasoningRecorded",
        "StepCompleted",  # the invalid payload the model wrote
        "FailureClassified",
        "RetryDecided",
        "StepCompleted",  # the runtime rejects it: repair
        "ReasoningRecorded",
        "StepCompleted",  # the repaired payload
        "ActionRequested",
        "PermissionDecided",
        "ToolExecuted",
        "EvidenceRecorded",
        "StepCompleted",
        "ClaimMade",
        "WorkflowCompleted",
        "StepCompleted",
    ]
    assert tickets(bus) == 1


async def test_repairs_stop_at_the_attempt_limit_and_escalate(bus: Bus) -> None:
    model = ScriptedModel(lambda request: {"customer": "northwind"}, usage=CALL)
    view = await run_workflow(bus, act_on_ticket, model)
    assert view.status == "escalated"
    assert len(model.calls) == 3  # max_attempts = 3
    strategies = [
        e.data["decision"]["strategy"]
        for e in bus.ledger.history(view.workflow_id)
        if e.type == "RetryDecided"
    ]
    assert strategies == ["repair", "repair", "escalate"]
    assert view.escalations[0]["kind"] == "invalid_tool_payload"


class Plan(BaseModel):
    severity: str
    escalate: bool


def no_escalation_for_low_severity(plan: Plan) -> str | None:
    if plan.escalate and plan.severity == "low":
        return "a low-severity complaint must not be escalated"
    return None


async def test_bad_reasoning_is_replanned_with_a_fresh_context(bus: Bus) -> None:
    model = ScriptedModel(
        [{"severity": "low", "escalate": True}, {"severity": "low", "escalate": False}], usage=CALL
    )
    plans: list[Plan] = []

    async def plan_then_file(ctx: Context) -> None:
        plans.append(
            await ctx.reason(
                "Plan.", {"complaint": "x"}, Plan, verify=no_escalation_for_low_severity
            )
        )
        await file_ticket(ctx)

    view = await run_workflow(bus, plan_then_file, model)
    assert view.status == "completed"
    assert plans == [Plan(severity="low", escalate=False)]
    first, second = model.calls
    assert "rejected" not in first.instructions
    assert "a low-severity complaint must not be escalated" in second.instructions
    assert second.repair == []  # a fresh context: the rejected plan itself is not replayed
    assert types(bus, view, after="ReasoningRecorded")[:7] == [
        "ReasoningRecorded",
        "StepCompleted",
        "FailureClassified",
        "RetryDecided",
        "StepCompleted",
        "ReasoningRecorded",
        "StepCompleted",
    ]
    assert view.failures[0]["kind"] == "bad_reasoning"


async def test_a_repair_the_budget_cannot_cover_stops_the_workflow_without_a_model_call(
    bus: Bus,
) -> None:
    model = ScriptedModel([{"customer": "northwind"}, TICKET], usage=CALL)
    view = await run_workflow(bus, act_on_ticket, model, budget=0.015)
    assert len(model.calls) == 1  # the repair would cost 0.01 more than the 0.005 left
    assert view.status == "stopped"
    assert types(bus, view)[-4:] == [
        "FailureClassified",
        "RetryDecided",
        "BudgetExceeded",
        "StepCompleted",
    ]
    decision = bus.ledger.history(view.workflow_id)[-3].data["decision"]
    assert decision["strategy"] == "stop"
    assert bus.ledger.workflow(view.workflow_id).cost_usd == pytest.approx(0.01)


async def test_a_model_call_past_the_budget_stops_the_workflow(bus: Bus) -> None:
    model = ScriptedModel([TICKET], usage=Usage(input_tokens=5000))  # 0.05 USD
    view = await run_workflow(bus, act_on_ticket, model, budget=0.02)
    assert view.status == "stopped"
    assert "BudgetExceeded" in types(bus, view)
    assert "ActionRequested" not in types(bus, view)


# -- permissions: deny, max_calls, approval ---------------------------------------------------


async def test_a_denied_action_escalates_and_deny_ends_the_workflow(
    bus: Bus, mailbox: Mailbox
) -> None:
    async def email_outsider(ctx: Context) -> None:
        await ctx.tools.send_email(to="someone@elsewhere.example", subject="s", body="b")

    view = await run_workflow(bus, email_outsider, ScriptedModel([]))
    assert view.status == "escalated"
    assert types(bus, view, after="ActionRequested")[:7] == [
        "ActionRequested",
        "PermissionDecided",
        "EvidenceRecorded",
        "FailureClassified",
        "RetryDecided",
        "EscalationRaised",
        "StepCompleted",
    ]
    [escalation] = view.escalations
    assert escalation["kind"] == "permission_denied"
    result = await resolve(bus.nc, bus.subjects, escalation["escalationId"], "deny", "dana", "no")
    assert result["workflowStatus"] == "failed"
    assert mailbox.received == []
    assert types(bus, view)[-2:] == ["EscalationResolved", "WorkflowFailed"]


async def test_max_calls_per_workflow(bus: Bus, mailbox: Mailbox) -> None:
    refusals: list[str] = []

    async def email_twice(ctx: Context) -> None:
        first = await ctx.tools.send_email(to="ops@acme.example", subject="s", body="one")
        try:
            await ctx.tools.send_email(to="ops@acme.example", subject="s", body="two")
        except RuntimeRefused as refused:
            refusals.append(refused.error.message)
        await ctx.summarize("emailed once", asserts="succeeded", evidence=[first.evidence])

    view = await run_workflow(bus, email_twice, ScriptedModel([]))
    assert len(mailbox.received) == 1
    assert "allows at most 1 per workflow" in refusals[0]
    decisions = [(p["permission"], p["rule"]) for p in view.permissions]
    assert decisions == [("allowed", "one-internal-email"), ("denied", "one-internal-email")]


async def test_an_action_needing_approval_runs_with_the_humans_grant(
    bus: Bus, mailbox: Mailbox
) -> None:
    async def email_press(ctx: Context) -> None:
        sent = await ctx.tools.send_email(to="press@pr-agency.example", subject="s", body="b")
        await ctx.summarize("emailed the press", asserts="succeeded", evidence=[sent.evidence])

    model = ScriptedModel([])
    agent = Agent("triage", model=model)
    agent.task("t")(email_press)
    stop = asyncio.Event()
    runner = asyncio.create_task(agent.run(bus.settings, stop))
    try:
        reply = await submit(bus.nc, bus.subjects, "t", "triage", b"{}")
        waiting = await watch(bus.nc, bus.subjects, reply.workflow_id)
        assert waiting.status == "escalated" and mailbox.received == []
        assert [p["permission"] for p in waiting.permissions] == ["approval_required"]
        [escalation] = waiting.escalations
        assert escalation["kind"] == "approval_required"
        await resolve(bus.nc, bus.subjects, escalation["escalationId"], "approve", "dana")
        done = await watch(
            bus.nc, bus.subjects, reply.workflow_id, until=lambda view: view.status == "completed"
        )
    finally:
        stop.set()
        await runner
    assert done.status == "completed"
    assert [m["To"] for m in mailbox.received] == ["press@pr-agency.example"]
    [evidence] = done.evidence
    assert (evidence["permission"], evidence["rule"]) == ("approved", "human:dana")
    assert "WorkflowResumed" in types(bus, done)


# -- claims ---------------------------------------------------------------------------------------


async def test_an_unverified_claim_escalates_and_approval_completes(bus: Bus) -> None:
    async def claims_without_evidence(ctx: Context) -> None:
        await ctx.summarize("all done", asserts="succeeded", evidence=[])

    view = await run_workflow(bus, claims_without_evidence, ScriptedModel([]))
    assert view.status == "escalated"
    assert view.claims[0]["verdict"] == "unsupported"  # issue 11: the verdict vocabulary
    assert view.escalations[0]["kind"] == "unverified_claim"
    result = await resolve(
        bus.nc, bus.subjects, view.escalations[0]["escalationId"], "approve", "dana"
    )
    assert result["workflowStatus"] == "completed"
