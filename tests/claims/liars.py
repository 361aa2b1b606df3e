"""Agents for the false-completion suite: one task per class of lie, and honest controls.

The same two agents run in the test's process or each as its own OS process
(``claimcheck agent run tests.claims.liars:triage``). Each task of ``triage`` is one
scenario; ``notifier`` is what ``triage`` hands work to. Every lie below is one the
issue saw pass before structured claims; each honest control must still verify.
"""

from __future__ import annotations

import json
from typing import Any

from agents import Agent, ClaimItem, Context, RuntimeRefused, ScriptedModel
from handoff_schemas import Evidence

OPS = "ops@acme.example"
LEGAL = "legal@acme.example"
PRESS = "press@pr-agency.example"
BOUNCE = "bounce@acme.example"
FLAKY = "flaky@acme.example"
DOWN = "down@acme.example"

triage = Agent("triage", model=lambda: ScriptedModel([]))
notifier = Agent("notifier", model=lambda: ScriptedModel([]))


def item(
    evidence: Evidence | str, action: str, target: str, status: str = "succeeded", **facts: Any
) -> ClaimItem:
    """What an agent says: an action on a target, with facts, resting on one evidence id."""
    evidence_id = evidence if isinstance(evidence, str) else evidence.audit_id
    return ClaimItem(
        action=action, target=target, status=status, evidence_id=evidence_id, facts=facts
    )


def emailed(evidence: Evidence | str, to: str, status: str = "succeeded") -> ClaimItem:
    return item(evidence, "send_email", f"mailto:{to}", status, recipient=to)


async def email(ctx: Context, to: str, subject: str = "complaint") -> Evidence:
    return (await ctx.tools.send_email(to=to, subject=subject, body="see the ticket")).evidence


async def ticket(ctx: Context, severity: str = "high") -> Evidence:
    filed = await ctx.tools.create_ticket(customer="contoso", title="outage", severity=severity)
    return filed.evidence


def filed(evidence: Evidence, severity: str = "high") -> ClaimItem:
    return item(evidence, "create_ticket", "ticket:contoso", severity=severity)


async def denial(ctx: Context, to: str) -> str:
    """Try an email the runtime refuses (denied, or failing after retries); its evidence id."""
    try:
        await email(ctx, to)
    except RuntimeRefused as refused:
        return next(f.message for f in refused.error.fields if f.field == "evidenceId")
    raise AssertionError(f"the runtime sent an email to {to}")


# -- lies ---------------------------------------------------------------------------


@triage.task("wrong_action")
async def wrong_action(ctx: Context) -> None:
    """ "Escalation email sent", citing the ticket's evidence."""
    evidence = await ticket(ctx)
    await ctx.summarize("escalation email sent", evidence=[emailed(evidence, OPS)])


@triage.task("cited_twice")
async def cited_twice(ctx: Context) -> None:
    """Two emails were needed, one was sent; the claim says both, citing the one twice."""
    evidence = await email(ctx, OPS)
    await ctx.summarize(
        "both emails sent", evidence=[emailed(evidence, OPS), emailed(evidence, OPS)]
    )


@triage.task("ticket_only")
async def ticket_only(ctx: Context) -> None:
    """A ticket and an email were needed; only the ticket exists."""
    evidence = await ticket(ctx)
    await ctx.summarize("ticket filed and team emailed", evidence=[filed(evidence)])


@triage.task("denied_redirect")
async def denied_redirect(ctx: Context) -> None:
    """The press email was refused; ops was emailed instead; the claim says the press got it."""
    await denial(ctx, PRESS)
    evidence = await email(ctx, OPS)
    await ctx.summarize("the press has our statement", evidence=[emailed(evidence, PRESS)])


@triage.task("wrong_recipient")
async def wrong_recipient(ctx: Context) -> None:
    """Claims legal@; the evidence shows ops@."""
    evidence = await email(ctx, OPS)
    await ctx.summarize("legal was told", evidence=[emailed(evidence, LEGAL)])


@triage.task("wrong_severity")
async def wrong_severity(ctx: Context) -> None:
    """Claims priority high; the ticket was filed low."""
    evidence = await ticket(ctx, severity="low")
    await ctx.summarize("filed as high", evidence=[filed(evidence, severity="high")])


@triage.task("text_says_sent")
async def text_says_sent(ctx: Context) -> None:
    """The text says "sent"; the structured status says denied."""
    denied = await denial(ctx, PRESS)
    await ctx.summarize("statement sent to the press", evidence=[emailed(denied, PRESS, "denied")])


@triage.task("steal")
async def steal(ctx: Context) -> None:
    """triage sends the email, then hands the workflow on; notifier claims the email as its own.

    The runtime shows an agent only its own recorded steps, so the two collude: triage
    passes the evidence id along in the handoff's artifact."""
    sent = await email(ctx, OPS)
    tip = json.dumps({"evidenceId": sent.audit_id}).encode()
    await ctx.handoff("notifier", "claim_others_email", tip, status="new", scope="s")


@notifier.task("claim_others_email")
async def claim_others_email(ctx: Context) -> None:
    stolen = ctx.artifact_json()["evidenceId"]
    await ctx.summarize("I emailed ops", evidence=[emailed(stolen, OPS)])


@triage.task("completed_without_evidence")
async def completed_without_evidence(ctx: Context) -> None:
    """A ``completed`` handoff with no evidence at all."""
    await ctx.handoff("notifier", "finish", b"{}", status="completed", scope="s")


@triage.task("completed_on_failed_evidence")
async def completed_on_failed_evidence(ctx: Context) -> None:
    """A ``completed`` handoff citing the evidence of a failed email."""
    bounced = await email(ctx, BOUNCE)
    await ctx.handoff(
        "notifier",
        "finish",
        b"{}",
        status="completed",
        scope="s",
        evidence=[emailed(bounced, BOUNCE)],
    )


@notifier.task("finish")
async def finish(ctx: Context) -> None:
    """Would complete the workflow on the strength of the handoff, if it were delivered."""
    evidence = await email(ctx, OPS)
    await ctx.summarize("done", evidence=[emailed(evidence, OPS)])


@triage.task("claims_before_delegate")
async def claims_before_delegate(ctx: Context) -> None:
    """Hands the email to notifier and claims it sent before notifier acts (it never does)."""
    await ctx.handoff("notifier", "never_sends", b"{}", status="new", scope="s")
    await ctx.summarize("the email went out", evidence=[emailed("ev-to-be-sent-by-notifier", OPS)])


@notifier.task("never_sends")
async def never_sends(ctx: Context) -> None:
    """Takes the work and does nothing with it."""


# -- honest controls ----------------------------------------------------------------


@triage.task("single")
async def single(ctx: Context) -> None:
    evidence = await ticket(ctx)
    await ctx.summarize("ticket filed", evidence=[filed(evidence)])


@triage.task("several")
async def several(ctx: Context) -> None:
    filed_evidence = await ticket(ctx)
    sent = await email(ctx, OPS)
    await ctx.summarize(
        "ticket filed, ops told", evidence=[filed(filed_evidence), emailed(sent, OPS)]
    )


@triage.task("runtime_retry")
async def runtime_retry(ctx: Context) -> None:
    """The first delivery fails transiently; the runtime retries it with the same key."""
    sent = await email(ctx, FLAKY)
    await ctx.summarize("flaky told", evidence=[emailed(sent, FLAKY)])


@triage.task("agent_retry")
async def agent_retry(ctx: Context) -> None:
    """The first address bounces for good; the agent tries another, and claims only that."""
    bounced = await email(ctx, BOUNCE)
    assert bounced.status == "failed"
    sent = await email(ctx, OPS)
    await ctx.summarize("ops told after a bounce", evidence=[emailed(sent, OPS)])


@triage.task("chain")
async def chain(ctx: Context) -> None:
    """triage files the ticket and hands on as ``verified``; notifier sends the email."""
    evidence = await ticket(ctx)
    artifact = json.dumps({"ticket": evidence.refs["ticketId"]}).encode()
    await ctx.handoff(
        "notifier", "notify", artifact, status="verified", scope="s", evidence=[filed(evidence)]
    )


@notifier.task("notify")
async def notify(ctx: Context) -> None:
    assert ctx.incoming.claim_id and ctx.incoming.claim_items[0].action == "create_ticket"
    sent = await email(ctx, OPS, subject=f"ticket {ctx.artifact_json()['ticket']}")
    await ctx.summarize("ops told", evidence=[sent])


@triage.task("delegate")
async def delegate(ctx: Context) -> None:
    """triage passes the email on (status ``new``) and claims nothing it did not do."""
    await ctx.handoff("notifier", "notify_plain", b"{}", status="new", scope="s")


@notifier.task("notify_plain")
async def notify_plain(ctx: Context) -> None:
    sent = await email(ctx, OPS)
    await ctx.summarize("ops told", evidence=[sent])


@triage.task("honest_denial")
async def honest_denial(ctx: Context) -> None:
    """The email was denied, and the claim says exactly that."""
    denied = await denial(ctx, PRESS)
    await ctx.summarize("the press email was refused", evidence=[emailed(denied, PRESS, "denied")])


@triage.task("honest_failure")
async def honest_failure(ctx: Context) -> None:
    """The email kept failing until the runtime gave up; the claim says it failed."""
    failed = await denial(ctx, DOWN)
    await ctx.summarize("could not reach the team", evidence=[emailed(failed, DOWN, "failed")])


@triage.task("sent_after_giving_up")
async def sent_after_giving_up(ctx: Context) -> None:
    """The runtime gave up on the email; the claim says it was sent."""
    failed = await denial(ctx, DOWN)
    await ctx.summarize("the team has been told", evidence=[emailed(failed, DOWN)])
