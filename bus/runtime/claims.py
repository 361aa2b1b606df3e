"""Claims and verdicts: an agent's final word, judged against the workflow's evidence.

Only a verified final claim completes a workflow; any other verdict is an
``unverified_claim`` failure that asks a human (the verdict itself is the ledger's,
:mod:`bus.ledger.verdicts`).
"""

from __future__ import annotations

from bus.ledger import Workflow
from bus.runtime.protocol import Handler
from bus.runtime.steps import Steps
from handoff_schemas import SummarizeRequest, SummaryReply


class ClaimHandlers:
    def __init__(self, steps: Steps) -> None:
        self.steps = steps

    def operations(self) -> dict[str, Handler]:
        return {"summarize": self.summarize}

    async def summarize(self, agent: str, request: SummarizeRequest) -> SummaryReply:
        def change(workflow: Workflow) -> SummaryReply:
            claim = workflow.make_claim(agent, request.summary, request.claim)
            if claim.verdict == "verified":
                workflow.complete(agent, claim.claim_id)
            else:
                reason = f"final claim is {claim.verdict}: {claim.reason}"
                workflow.classify_failure(agent, "unverified_claim", reason, request.step_key)
                workflow.raise_escalation(
                    "unverified_claim", reason, agent, request.step_key, claim_id=claim.claim_id
                )
            return SummaryReply(claim=claim, workflow_status=workflow.status)

        return await self.steps.step(
            agent, "summarize", request.workflow_id, request.step_key, change
        )
