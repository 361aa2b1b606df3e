"""Asking before acting: an agent checks whether the policy allows an action, or records an
action it chose not to take because the policy denies it.

Both use the same decision as tool execution (:mod:`bus.runtime.execution`), on the
caller's identity and with the workflow's rule uses counted for ``max_calls``.
"""

from __future__ import annotations

from bus.ledger import Workflow
from bus.runtime.governance import rule_uses
from bus.runtime.policy import Policy
from bus.runtime.protocol import Handler, Refusal
from bus.runtime.steps import Steps
from bus.transport.signing import Signer
from handoff_schemas import DeniedActionRequest, EvidenceReply, PermitReply, PermitRequest


class PermissionHandlers:
    def __init__(self, steps: Steps, policy: Policy, signer: Signer) -> None:
        self.steps = steps
        self.policy = policy
        self.signer = signer  # a recorded denial is evidence, signed like all evidence

    def operations(self) -> dict[str, Handler]:
        return {"permit": self.permit, "denied": self.denied}

    async def permit(self, agent: str, request: PermitRequest) -> PermitReply:
        def change(workflow: Workflow) -> PermitReply:
            decision = self.policy.decide(
                agent, request.action, request.resource, rule_uses(workflow)
            )
            workflow.decide_permission(
                agent,
                request.action,
                request.resource,
                decision.outcome,
                decision.rule,
                decision.reason,
                request.step_key,
            )
            return PermitReply(
                permission="allowed" if decision.allowed else "denied",
                rule=decision.rule,
                reason=decision.reason,
            )

        return await self.steps.step(agent, "permit", request.workflow_id, request.step_key, change)

    async def denied(self, agent: str, request: DeniedActionRequest) -> EvidenceReply:
        """An agent records an action it chose not to take because the policy denies it."""

        def change(workflow: Workflow) -> EvidenceReply:
            decision = self.policy.decide(
                agent, request.action, request.resource, rule_uses(workflow)
            )
            if decision.allowed:
                raise Refusal(
                    "invalid_request",
                    f"the policy allows {request.action} on {request.resource} "
                    f"(rule {decision.rule}); there is no denial to record",
                )
            evidence = workflow.add_evidence(
                sign=self.signer.sign,
                actor=agent,
                action=request.action,
                resource=request.resource,
                permission="denied",
                rule=decision.rule,
                status="denied",
                refs={"agentReason": request.reason},
                step_key=request.step_key,
            )
            return EvidenceReply(evidence=evidence)

        return await self.steps.step(agent, "denied", request.workflow_id, request.step_key, change)
