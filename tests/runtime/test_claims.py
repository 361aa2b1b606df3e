"""False completion: an agent's "done" is a claim, and the runtime's verdict catches each way it
can be false. Each case gets its verdict and an escalation, never a completed workflow."""

from __future__ import annotations

from typing import Any

import pytest

from agents import Context, RuntimeRefused, ScriptedModel
from bus.runtime.catalogue import SendEmail, Tool, ToolFailure
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


class BouncingEmail(SendEmail):
    """The real email tool, but bounce@ addresses fail for good."""

    async def run(self, payload: Any, idempotency_key: str) -> dict[str, str]:
        if payload.to.startswith("bounce@"):
            raise ToolFailure("550 mailbox unavailable", transient=False)
        return await super().run(payload, idempotency_key)


@pytest.fixture
def tool_classes() -> dict[str, type[Tool]]:
    return {"send_email": BouncingEmail}


def assert_caught(view: WorkflowView, verdict: str, reason: str) -> None:
    [made] = view.claims
    assert (made["statement"], made["verdict"]) == (CLAIM, verdict)
    assert reason in made["reason"]
    assert view.status == "escalated"
    assert view.escalations[-1]["kind"] == "unverified_claim"
    assert view.escalations[-1]["claimId"] == made["claimId"]


async def test_done_without_ever_calling_the_tool(bus: Bus) -> None:
    async def says_done(ctx: Context) -> None:
        await ctx.summarize(CLAIM, asserts="succeeded", evidence=[])

    view = await run_workflow(bus, says_done, ScriptedModel([]))
    assert_caught(view, "unverified", "cites no evidence")


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
            await ctx.summarize(CLAIM, asserts="succeeded", evidence=[denial])

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
        await ctx.summarize(CLAIM, asserts="succeeded", evidence=elsewhere)

    view = await run_workflow(bus, borrows, ScriptedModel([]))
    assert_caught(view, "unverified", f"no evidence {elsewhere[0]} in this workflow")


async def test_the_claim_cites_evidence_that_does_not_exist(bus: Bus) -> None:
    async def invents(ctx: Context) -> None:
        await ctx.summarize(CLAIM, asserts="succeeded", evidence=["ev-0000made0up"])

    view = await run_workflow(bus, invents, ScriptedModel([]))
    assert_caught(view, "unverified", "no evidence ev-0000made0up")
