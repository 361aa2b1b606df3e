"""False completion: an agent's "done" is a claim, and the runtime's verdict catches each way it
can be false. Each case gets its verdict and an escalation, never a completed workflow."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from agents import ClaimItem, Context, RuntimeRefused, ScriptedModel
from bus.runtime.catalogue import Call, Catalogue, ToolFailure
from bus.tools.mail import Email, Sent, send_email
from projections import WorkflowView
from tests.conftest import Bus, run_workflow

POLICY = """
[[rules]]
name = "triage-emails-acme"
actor = "triage"
action = "send_email"
resource = "mailto:*@acme.example"
effect = "allow"

[failures.permission_denied]   # let the agent go on, so that it can make its false claim
strategy = "retry"             # (an exhausted "fail" now fails the workflow at once)
max_attempts = 2
"""

CLAIM = "the escalation email was sent"


async def bouncing(email: Email, call: Call) -> Sent:
    """The real email tool, but bounce@ addresses fail for good."""
    if email.to.startswith("bounce@"):
        raise ToolFailure("550 mailbox unavailable", transient=False)
    return await send_email.function(email, call)


@pytest.fixture
def catalogue() -> Catalogue:
    return Catalogue("bouncing", [dataclasses.replace(send_email, function=bouncing)])


def sent_to(address: str, evidence_id: str) -> ClaimItem:
    """The item an agent claiming "the email was sent" makes, citing ``evidence_id``."""
    return ClaimItem(
        action="send_email",
        target=f"mailto:{address}",
        status="succeeded",
        evidence_id=evidence_id,
        facts={"recipient": address},
    )


def assert_caught(view: WorkflowView, verdict: str, reason: str) -> None:
    [made] = view.claims
    assert (made["remarks"], made["verdict"]) == (CLAIM, verdict)
    assert reason in made["reason"]
    assert view.status == "escalated"
    assert view.escalations[-1]["kind"] == "unverified_claim"
    assert view.escalations[-1]["claimId"] == made["claimId"]


async def test_done_without_ever_calling_the_tool(bus: Bus) -> None:
    async def says_done(ctx: Context) -> None:
        await ctx.summarize(CLAIM, asserts="succeeded", evidence=[])

    view = await run_workflow(bus, says_done, ScriptedModel([]))
    assert_caught(view, "unsupported", "has no items")


async def test_the_tool_failed_but_the_agent_says_it_was_sent(bus: Bus) -> None:
    async def ignores_the_bounce(ctx: Context) -> None:
        sent = await ctx.tools.send_email(to="bounce@acme.example", subject="s", body="b")
        await ctx.summarize(CLAIM, asserts="succeeded", evidence=[sent.evidence])

    view = await run_workflow(bus, ignores_the_bounce, ScriptedModel([]))
    assert [e["status"] for e in view.evidence] == ["failed"]
    assert_caught(view, "contradicted", "is failed")


async def test_permission_was_denied_but_the_agent_says_it_was_sent(bus: Bus) -> None:
    async def ignores_the_denial(ctx: Context) -> None:
        try:
            await ctx.tools.send_email(to="press@pr-agency.example", subject="s", body="b")
        except RuntimeRefused as refused:
            [denial] = [f.message for f in refused.error.fields if f.field == "evidenceId"]
            await ctx.summarize(CLAIM, evidence=[sent_to("press@pr-agency.example", denial)])

    view = await run_workflow(bus, ignores_the_denial, ScriptedModel([]))
    assert [e["status"] for e in view.evidence] == ["denied"]
    assert_caught(view, "contradicted", "is denied")


async def test_the_claim_cites_evidence_from_another_workflow(bus: Bus, mailbox: Any) -> None:
    elsewhere: list[str] = []

    async def sends(ctx: Context) -> None:
        sent = await ctx.tools.send_email(to="ops@acme.example", subject="s", body="b")
        elsewhere.append(sent.evidence.audit_id)
        await ctx.summarize(CLAIM, asserts="succeeded", evidence=[sent.evidence])

    first = await run_workflow(bus, sends, ScriptedModel([]))
    assert first.status == "completed"

    async def borrows(ctx: Context) -> None:
        await ctx.summarize(CLAIM, evidence=[sent_to("ops@acme.example", elsewhere[0])])

    view = await run_workflow(bus, borrows, ScriptedModel([]))
    assert_caught(view, "unsupported", f"no evidence {elsewhere[0]} in this workflow")


async def test_the_claim_cites_evidence_that_does_not_exist(bus: Bus) -> None:
    async def invents(ctx: Context) -> None:
        await ctx.summarize(CLAIM, evidence=[sent_to("ops@acme.example", "ev-0000made0up")])

    view = await run_workflow(bus, invents, ScriptedModel([]))
    assert_caught(view, "unsupported", "no evidence ev-0000made0up")
