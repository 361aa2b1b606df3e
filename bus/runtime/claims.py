"""Claims and verdicts: an agent's final word, judged against the workflow's evidence.

A claim is judged item by item (the verdict itself is the ledger's,
:mod:`bus.ledger.verdicts`). A verified claim closes the handling it speaks for, and the
workflow completes once no handling is open and every task handled in it is done
(:mod:`bus.ledger.completion`). Any other verdict is an ``unverified_claim`` failure,
and the failure table decides what follows: by default a human is asked; ``fail`` ends
the workflow. Nothing waits for an agent's word.
"""

from __future__ import annotations

from bus.ledger import Workflow
from bus.runtime.policy import Policy
from bus.runtime.protocol import Handler
from bus.runtime.steps import Steps
from handoff_schemas import Claim, SummarizeRequest, SummaryReply


def after_unverified(
    workflow: Workflow,
    policy: Policy,
    agent: str,
    claim: Claim,
    why: str,
    step_key: str,
) -> None:
    """Apply the failure table to a claim that did not verify.

    ``escalate`` (the default) asks a human, naming the claim: an approval vouches for it
    (:meth:`~bus.ledger.workflow.Workflow.approve_claim`); ``fail`` ends the workflow now.
    """
    reason = f"{why} is {claim.verdict}: {claim.reason}"
    workflow.classify_failure(agent, "unverified_claim", reason, step_key)
    decision = policy.failure("unverified_claim", 1)
    if decision.strategy in ("fail", "stop"):
        workflow.decide_retry("unverified_claim", decision.model_dump(), step_key)
        workflow.fail(f"unverified_claim: {reason}")
        return
    workflow.raise_escalation("unverified_claim", reason, agent, step_key, claim_id=claim.claim_id)


class ClaimHandlers:
    def __init__(self, steps: Steps, policy: Policy) -> None:
        self.steps = steps
        self.policy = policy

    def operations(self) -> dict[str, Handler]:
        return {"summarize": self.summarize}

    async def summarize(self, agent: str, request: SummarizeRequest) -> SummaryReply:
        done = self.policy.done()

        def change(workflow: Workflow) -> SummaryReply:
            claim = workflow.make_claim(
                agent, request.summary, request.claim, request.step_key, done
            )
            if claim.verdict != "verified":
                after_unverified(
                    workflow, self.policy, agent, claim, "final claim", request.step_key
                )
            elif not workflow.open_handlings(done):
                workflow.complete(agent, claim.claim_id, done)
            return SummaryReply(claim=claim, workflow_status=workflow.status)

        return await self.steps.step(
            agent, "summarize", request.workflow_id, request.step_key, change
        )
