"""The mission's example: a customer complaint is triaged, handed off, and maybe escalated.

``triage`` reads the complaint, decides its severity and whether to escalate,
and files a ticket. An escalation is handed to ``notifier`` as a verified
handoff citing the ticket's evidence; ``notifier`` drafts the email, and the
runtime sends it only if the policy allows that address. Otherwise the runtime
escalates to a human (``claimcheck escalations approve|deny``), and an approval
resumes the handler where it stopped. Each agent ends with a structured claim
(the action, its target, the facts it asserts and the evidence it rests on), and
the runtime verifies every item before the workflow completes.

Run each as its own process::

    claimcheck agent run agents.complaints:triage
    claimcheck agent run agents.complaints:notifier
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, Field

from agents import Agent, ClaimItem, Context, ModelRequest, ScriptedModel, default_model


class Complaint(BaseModel):
    customer: str
    text: str
    channel: str = "email"


class TriageDecision(BaseModel):
    """What the model believes about a complaint."""

    severity: Literal["low", "medium", "high", "critical"]
    escalate: bool
    team_email: str = Field(description="Who must hear about an escalation.")
    rationale: str


class EscalationEmail(BaseModel):
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1)


# -- offline reasoning: a scripted stand-in for the model --------------------

ESCALATION_WORDS = ("lawyer", "legal", "outage", "refund", "cancel", "journalist", "press")


def scripted_triage(request: ModelRequest) -> TriageDecision:
    text = request.context["complaint"]["text"].lower()
    escalate = any(word in text for word in ESCALATION_WORDS)
    team = (
        "press@pr-agency.example"
        if "journalist" in text or "press" in text
        else "support-leads@acme.example"
    )
    return TriageDecision(
        severity="high" if escalate else "low",
        escalate=escalate,
        team_email=team,
        rationale="mentions " + ", ".join(w for w in ESCALATION_WORDS if w in text)
        if escalate
        else "a routine complaint",
    )


def scripted_email(request: ModelRequest) -> EscalationEmail:
    complaint, decision = request.context["complaint"], request.context["decision"]
    return EscalationEmail(
        subject=f"[{decision['severity']}] complaint from {complaint['customer']}",
        body=f"{complaint['text']}\n\nTriage: {decision['rationale']}\n"
        f"Ticket: {request.context['ticket']}",
    )


# -- the agents -----------------------------------------------------------------

triage = Agent(
    "triage",
    model=lambda: default_model(ScriptedModel(scripted_triage), agent="triage"),
    system_prompt="You triage customer complaints for Acme.",
)
notifier = Agent(
    "notifier",
    model=lambda: default_model(ScriptedModel(scripted_email), agent="notifier"),
    system_prompt="You write escalation emails for Acme's teams.",
)


@triage.task("triage_complaint")
async def triage_complaint(ctx: Context) -> None:
    complaint = Complaint.model_validate(ctx.artifact_json())
    decision = await ctx.reason(
        "Decide the severity of this complaint, whether to escalate it, and to whom.",
        {"complaint": complaint.model_dump()},
        TriageDecision,
    )
    ticket = await ctx.tools.create_ticket(
        customer=complaint.customer, title=complaint.text[:80], severity=decision.severity
    )
    ticket_id = ticket.evidence.refs.get("ticketId", "")
    await ctx.checkpoint("ticket-filed", {"ticketId": ticket_id}, evidence=[ticket.evidence])
    # The claim says exactly what was done: the ticket, for this customer, at this
    # severity. The runtime checks each fact against what it recorded of the call.
    filed = ClaimItem(
        action="create_ticket",
        target=f"ticket:{complaint.customer}",
        status="succeeded",
        evidence_id=ticket.evidence.audit_id,
        facts={"severity": decision.severity, "ticketId": ticket_id},
    )
    if not decision.escalate:
        await ctx.summarize(f"filed ticket {ticket_id}; no escalation needed", evidence=[filed])
        return
    escalation = {
        "complaint": complaint.model_dump(),
        "decision": decision.model_dump(),
        "ticket": ticket_id,
    }
    await ctx.handoff(
        to="notifier",
        task="notify_escalation",
        artifact=json.dumps(escalation).encode(),
        status="verified",
        scope=f"complaint:{complaint.customer}",
        evidence=[filed],
    )


@notifier.task("notify_escalation")
async def notify_escalation(ctx: Context) -> None:
    escalation = ctx.artifact_json()
    email = await ctx.reason(
        "Write the escalation email for this complaint.",
        escalation,
        EscalationEmail,
        purpose="draft",
    )
    team = escalation["decision"]["team_email"]
    # The runtime checks the policy on the real recipient. An address the policy
    # does not allow escalates to a human; this handler resumes here if approved.
    sent = await ctx.tools.send_email(to=team, subject=email.subject, body=email.body)
    await ctx.checkpoint(
        "email-sent",
        {"messageId": sent.evidence.refs.get("messageId", "")},
        evidence=[sent.evidence],
    )
    await ctx.summarize(
        f"emailed {team} about the escalation",
        evidence=[
            ClaimItem(
                action="send_email",
                target=f"mailto:{team}",
                status="succeeded",
                evidence_id=sent.evidence.audit_id,
                facts={"recipient": team, "subject": email.subject},
            )
        ],
    )
