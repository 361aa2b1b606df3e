"""Starting workflows, reading their state, and handing work from one agent to another.

A handoff is delivered (by the relay) only after it was validated and recorded; one that
is malformed or names a missing artifact is refused, and the refusal is recorded in its
workflow so the reason is never lost, if the caller takes part in that workflow (else in
the security log: a refusal must not be a way to write into someone else's workflow).
Only the operator starts workflows, and only who takes part in one reads its state.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import msgspec

from bus import telemetry
from bus.ledger import LedgerError, Workflow
from bus.ledger.completion import Done
from bus.ledger.errors import WorkflowClosed
from bus.runtime.claims import after_unverified
from bus.runtime.policy import Policy
from bus.runtime.protocol import INCOMING_TRACE, Handler, Refusal
from bus.runtime.security import SecurityLog
from bus.runtime.state_pages import state_page
from bus.runtime.steps import Steps
from bus.transport.artifacts import ArtifactError, ArtifactStore
from bus.transport.subjects import OPERATOR
from handoff_schemas import (
    DONE_STATUSES,
    ClaimAssertion,
    ClaimItem,
    Handoff,
    HandoffReply,
    HandoffRequest,
    RetryAdvice,
    StartReply,
    StartRequest,
    StateRequest,
    StepsReply,
)

log = logging.getLogger(__name__)


def cited_item(workflow: Workflow, evidence_id: str | None) -> list[ClaimItem]:
    """A handoff that cites one evidence id and no items: the item that id stands for.

    Handoffs before structured claims cited one ``evidenceId``; it still works, as a claim
    that the record succeeded and is the sender's to cite (an unknown id is unsupported).
    """
    if evidence_id is None:
        return []
    record = workflow.evidence.get(evidence_id)
    if record is None:
        return [
            ClaimItem(
                action="unknown", target="unknown", status="succeeded", evidence_id=evidence_id
            )
        ]
    return [
        ClaimItem(
            action=record["action"],
            target=record["resource"],
            status="succeeded",
            evidence_id=evidence_id,
        )
    ]


class WorkflowHandlers:
    def __init__(
        self, steps: Steps, policy: Policy, artifacts: ArtifactStore, security: SecurityLog
    ) -> None:
        self.steps = steps
        self.policy = policy
        self.artifacts = artifacts
        self.security = security

    def operations(self) -> dict[str, Handler]:
        return {"start": self.start, "state": self.state, "handoff": self.handoff}

    async def start(self, agent: str, request: StartRequest) -> StartReply:
        if agent != OPERATOR:  # an agent that starts workflows escapes every per-workflow limit
            await self.security.record(agent, "start", "start_refused", "only the operator starts")
            raise Refusal("permission_denied", f"only the operator starts workflows, not {agent!r}")
        await self.require_artifact(request.artifact_id)
        handoff = Handoff(
            handoff_id=f"ho-{uuid4().hex}",
            workflow_id="",
            from_=agent,
            to=request.to,
            task=request.task,
            artifact_id=request.artifact_id,
            status="new",
            scope=request.scope,
            created_at=datetime.now(UTC),
        )
        budget = (
            request.budget_usd if request.budget_usd is not None else self.policy.budget.default_usd
        )
        with telemetry.span(f"start_workflow {request.task}", **{"gen_ai.agent.name": request.to}):
            workflow = await self.steps.start(
                self.steps.ledger.starting(
                    request.task,
                    request.to,
                    request.artifact_id,
                    request.scope,
                    agent,
                    budget,
                    msgspec.to_builtins(handoff),
                    telemetry.traceparent(),  # the workflow's trace starts here (or the caller's)
                    request.request_id,
                )
            )
        first_handoff = next(iter(workflow.handoffs), handoff.handoff_id)  # a repeated start's
        return StartReply(workflow_id=str(workflow.id), handoff_id=first_handoff)

    async def state(self, agent: str, request: StateRequest) -> StepsReply:
        """A page of a workflow's status, checkpoints and the caller's own recorded steps.

        Only for who takes part in it; another agent's recorded replies are never shown
        (an agent replays what ``state`` returns as its own steps). Paged
        (:mod:`bus.runtime.state_pages`): what a read costs does not grow with the history.
        """

        def view(workflow: Workflow) -> StepsReply:  # copies, taken in the ledger thread
            workflow.require_reader(agent)
            return state_page(self.steps.ledger, workflow, agent, request)

        return await self.steps.read(request.workflow_id, view)

    async def handoff(self, agent: str, request: HandoffRequest) -> HandoffReply:
        handoff = Handoff(
            handoff_id=f"ho-{uuid4().hex}",
            workflow_id=request.workflow_id,
            from_=agent,
            to=request.to,
            task=request.task,
            artifact_id=request.artifact_id,
            evidence_id=request.evidence_id,
            status=request.status,
            scope=request.scope,
            created_at=datetime.now(UTC),
        )
        fields = msgspec.to_builtins(handoff)
        try:
            await self.require_artifact(request.artifact_id)
        except Refusal as refusal:
            await self.record_rejection(agent, request.workflow_id, fields, str(refusal))
            raise Refusal("invalid_handoff", str(refusal)) from None

        traceparent = INCOMING_TRACE.get()  # read here: change() runs in the ledger thread
        done = self.policy.done()

        def change(workflow: Workflow) -> HandoffReply:
            if request.status in DONE_STATUSES:
                self._gate(workflow, agent, request, fields, done)
            workflow.send_handoff(fields, traceparent, request.step_key)
            return HandoffReply(handoff_id=handoff.handoff_id)

        return await self.steps.step(
            agent, "handoff", request.workflow_id, request.step_key, change
        )

    def _gate(
        self,
        workflow: Workflow,
        agent: str,
        request: HandoffRequest,
        fields: dict[str, Any],
        done: Done,
    ) -> None:
        """A handoff that says work was done is a claim: judge its items, refuse it unless verified.

        The verified claim's id and items travel with the handoff. A refused handoff is
        recorded, and the failure table decides what follows (a human, by default), so the
        workflow never waits on a handoff that will not come.
        """
        items = list(request.items) or cited_item(workflow, request.evidence_id)
        claim = workflow.make_claim(
            agent,
            f"handoff to {request.to} as {request.status}",
            ClaimAssertion(items=items),
            request.step_key,
            done,
        )
        if claim.verdict == "verified":
            fields["claimId"] = claim.claim_id
            fields["claimItems"] = msgspec.to_builtins(items)
            return
        reason = (
            f"status {request.status!r} needs a verified claim, and its claim {claim.claim_id} "
            f"is {claim.verdict}: {claim.reason}"
        )
        # Kept with the claim it was refused for: a human approving that claim sends it.
        fields["claimId"] = claim.claim_id
        fields["claimItems"] = msgspec.to_builtins(items)
        workflow.reject_handoff(fields, reason)
        after_unverified(
            workflow,
            self.policy,
            agent,
            claim,
            f"the claim of {request.status} handoff to {request.to}",
            request.step_key,
        )
        strategy = "escalate" if workflow.status == "escalated" else "fail"
        raise Refusal(
            "invalid_handoff",
            reason,
            retry=RetryAdvice(strategy=strategy, attempt=1, max_attempts=1),
        )

    async def record_rejected_handoff(self, agent: str, data: bytes, reason: str) -> None:
        """Record a malformed handoff in its workflow, when the caller takes part in it."""
        try:
            raw = msgspec.json.decode(data)
            workflow_id = raw["workflowId"]
        except Exception:  # not JSON, too deep, not an object: nothing names a workflow
            return
        if not isinstance(workflow_id, str):
            return
        await self.record_rejection(agent, workflow_id, rejected_fields(raw, agent), reason)

    async def record_rejection(
        self, agent: str, workflow_id: str, fields: dict[str, Any], reason: str
    ) -> None:
        """A refused handoff goes into its workflow only if the caller takes part in it and
        it is not closed; otherwise into the security log, never into someone else's."""

        def reject(workflow: Workflow) -> None:
            workflow.require_participant(agent)
            if workflow.closed:
                raise WorkflowClosed(f"workflow {workflow.id} is {workflow.status}")
            workflow.reject_handoff(fields, reason)

        try:
            await self.steps.command(workflow_id, reject)
        except LedgerError as error:
            await self.security.record(
                agent, "handoff", "rejected_handoff_not_recorded", f"{error}; {reason}"
            )

    async def require_artifact(self, artifact_id: str) -> None:
        try:
            await self.artifacts.get(artifact_id)
        except ArtifactError as error:
            raise Refusal("invalid_request", str(error)) from None


HANDOFF_FIELDS = ("workflowId", "stepKey", "to", "task", "artifactId", "status", "scope")


def rejected_fields(raw: object, agent: str) -> dict[str, Any]:
    """What a malformed handoff request said, bounded, with ``from`` the authenticated caller."""
    said = raw if isinstance(raw, dict) else {}
    fields: dict[str, Any] = {}
    for key in (*HANDOFF_FIELDS, "evidenceId"):
        value = said.get(key)
        if value is not None:
            fields[key] = value[:MAX_ECHO] if isinstance(value, str) else repr(value)[:MAX_ECHO]
    return {**fields, "from": agent}


MAX_ECHO = 256
"""Characters of each field of a malformed handoff kept in its rejection."""
