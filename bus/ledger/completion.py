"""When a workflow is done: decided from its handoffs, claims and evidence, never from one
agent's word.

Every handoff opens a *handling* (its ``handoffId``). A handling closes when the agent it
was handed to makes a verified claim for it (a final summary, or a ``completed`` /
``verified`` handoff whose claim verified) or a claim a human approved (an answered
``unverified_claim`` escalation naming it), or when it passed the work on and everything
it passed on closed, with its own task's definition of done met by the evidence those
downstream claims verified. A workflow completes only when no handling is open.

A human's approval vouches for one claim: it closes that claim's handlings and lets a
handoff refused for that claim go on, never anything else (other handlings stay open, and
approved claims' evidence is not citable by anyone).

Pure functions of the aggregate's state, kept out of :mod:`bus.ledger.workflow` so the
aggregate stays a list of events and invariants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bus.ledger.verdicts import Requirement, Scope, judge_claim, missing_for_done, statement
from handoff_schemas import Claim, ClaimAssertion

if TYPE_CHECKING:
    from bus.ledger.workflow import Workflow

Done = Mapping[str, Sequence[Requirement]]
"""Task name -> its definition of done (the policy's ``[tasks.<task>] done``)."""


def handling_of(step_key: str) -> str:
    """Step keys are ``<handoffId>/<n>``: the handling a step belongs to."""
    return step_key.rpartition("/")[0] or step_key


def parents(workflow: Workflow) -> dict[str, str]:
    """Handoff id -> the handling it was sent from ("" for a workflow's first handoff)."""
    return workflow.__dict__.setdefault("handoff_parents", {})


def verified_claims(workflow: Workflow) -> list[dict[str, Any]]:
    return [claim for claim in workflow.claims.values() if claim["verdict"] == "verified"]


def approved_claims(workflow: Workflow) -> dict[str, str]:
    """Claim id -> the human who approved it (an answered ``unverified_claim`` escalation)."""
    return {
        escalation["claimId"]: escalation.get("approver", "")
        for escalation in workflow.escalations.values()
        if escalation.get("claimId") and escalation.get("decision") == "approve"
    }


def closed_by_claim(workflow: Workflow) -> set[str]:
    """Handlings a verified claim, or one a human approved, speaks for."""
    approved = approved_claims(workflow)
    return {
        hid
        for claim in workflow.claims.values()
        if claim["verdict"] == "verified" or claim["claimId"] in approved
        for hid in claim.get("handoffIds", [])
    }


def handlings_for(workflow: Workflow, agent: str, step_key: str) -> list[str]:
    """The handlings a claim made at ``step_key`` speaks for.

    The step's own handling when it is one of this agent's; otherwise (a request
    whose step key names no handoff) every handling of this agent still open.
    """
    own = workflow.handoffs.get(handling_of(step_key))
    if own is not None and own["to"] == agent:
        return [own["handoffId"]]
    closed = closed_by_claim(workflow)
    return [
        hid
        for hid, handoff in workflow.handoffs.items()
        if handoff["to"] == agent and hid not in closed
    ]


def scope_for(workflow: Workflow, agent: str) -> Scope:
    """What ``agent`` may cite: its own evidence, and what its delegates' verified claims cite."""
    delegates = {h["to"] for h in workflow.handoffs.values() if h.get("from") == agent}
    delegated = {
        item["evidenceId"]
        for claim in verified_claims(workflow)
        if claim["agent"] in delegates and claim["agent"] != agent
        for item in claim.get("items", [])
    }
    return Scope(agent=agent, evidence=workflow.evidence, delegated=delegated)


def open_handlings(workflow: Workflow, done: Done) -> list[str]:
    """Handlings not yet closed; the workflow completes only when this is empty."""
    closed = closed_by_claim(workflow)
    children: dict[str, list[str]] = {}
    for hid, parent in parents(workflow).items():
        children.setdefault(parent, []).append(hid)

    def cited(hid: str) -> list[dict[str, Any]]:
        """Evidence the verified claims of a handling and everything below it rest on."""
        ids = [
            item["evidenceId"]
            for claim in verified_claims(workflow)
            if hid in claim.get("handoffIds", [])
            for item in claim.get("items", [])
        ]
        records = [workflow.evidence[i] for i in ids if i in workflow.evidence]
        return records + [r for child in children.get(hid, []) for r in cited(child)]

    def is_closed(hid: str) -> bool:
        if hid in closed:
            return True
        below = children.get(hid, [])
        if not below or not all(is_closed(child) for child in below):
            return False
        task = workflow.handoffs[hid].get("task", "")
        return not missing_for_done(done.get(task, ()), cited(hid))

    return [hid for hid in workflow.handoffs if not is_closed(hid)]


def judged_claim(
    workflow: Workflow,
    agent: str,
    assertion: ClaimAssertion,
    step_key: str,
    done: Done,
    claim_id: str,
) -> Claim:
    """A claim judged item by item, speaking for the handlings of ``step_key``.

    Those handlings' tasks' definitions of done decide between ``verified`` and ``partial``.
    """
    handlings = handlings_for(workflow, agent, step_key)
    requirements = [
        requirement
        for hid in handlings
        for requirement in done.get(workflow.handoffs[hid].get("task", ""), ())
    ]
    verdict, reason, items, missing = judge_claim(
        assertion.items, scope_for(workflow, agent), requirements
    )
    statuses = {item.status for item in items}
    return Claim(
        claim_id=claim_id,
        workflow_id=str(workflow.id),
        agent=agent,
        statement=statement(items),
        verdict=verdict,
        reason=reason,
        asserts=statuses.pop() if len(statuses) == 1 else None,
        evidence_ids=[item.evidence_id for item in items],
        items=items,
        remarks=assertion.remarks,
        missing=missing,
        handoff_ids=handlings,
    )


def gate_problem(workflow: Workflow, handoff: dict[str, Any]) -> str | None:
    """Why a ``completed`` / ``verified`` handoff may not be sent, or None when it may.

    It must name (``claimId``) a claim of this workflow made by its sender that verified,
    or that a human approved after the handoff was refused for it.
    """
    claim = workflow.claims.get(handoff.get("claimId") or "")
    if (
        claim is not None
        and (claim["verdict"] == "verified" or claim["claimId"] in approved_claims(workflow))
        and claim["agent"] == handoff.get("from")
    ):
        return None
    why = (
        f"claim {claim['claimId']} by {claim['agent']} is {claim['verdict']}: {claim['reason']}"
        if claim is not None
        else "it rests on no claim"
    )
    return f"status {handoff['status']!r} needs a verified claim of its sender's, and {why}"


def backing(workflow: Workflow, agent: str, evidence_ids: Sequence[str]) -> list[str]:
    """The ids among ``evidence_ids`` that really back what ``agent`` declares.

    Each must be this workflow's, citable by the agent (:func:`scope_for`), succeeded,
    and the latest outcome of its step.
    """
    scope = scope_for(workflow, agent)
    latest = scope.latest_of_step()
    backed = []
    for eid in evidence_ids:
        record = workflow.evidence.get(eid)
        if (
            record is not None
            and record["status"] == "succeeded"
            and (record["actor"] == agent or eid in scope.delegated)
            and latest.get(record.get("stepKey", ""), eid) == eid
        ):
            backed.append(eid)
    return backed
