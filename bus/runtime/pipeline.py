"""The pipeline's recording steps: intent, context, the model's reasoning, checkpoints and
audit notes (and ``begin``: intent, the artifact and context in one round trip).

None of these acts on the world; each records what an agent resolved, read, believed or
declared, so that a replay shows it and the budget counts it. A checkpoint is recorded as
declared, with the evidence that really backs it (none, if the agent's word is all there is).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from bus.ledger import Workflow
from bus.ledger.completion import backing
from bus.runtime.policy import Policy
from bus.runtime.protocol import Handler, Refusal
from bus.runtime.state_pages import state_page
from bus.runtime.steps import Steps
from bus.transport.artifacts import ArtifactError, ArtifactStore
from handoff_schemas import (
    Ack,
    ArtifactDigest,
    AuditRequest,
    BeginReply,
    BeginRequest,
    CheckpointRequest,
    ContextRequest,
    IntentReply,
    IntentRequest,
    ReasoningReply,
    ReasoningRequest,
    StateRequest,
)


class PipelineHandlers:
    def __init__(self, steps: Steps, policy: Policy, artifacts: ArtifactStore) -> None:
        self.steps = steps
        self.policy = policy
        self.artifacts = artifacts

    def operations(self) -> dict[str, Handler]:
        return {
            "begin": self.begin,
            "intent": self.intent,
            "context": self.context,
            "reasoning": self.reasoning,
            "checkpoint": self.checkpoint,
            "audit": self.audit,
        }

    async def begin(self, agent: str, request: BeginRequest) -> BeginReply:
        """``intent``, ``artifact_get`` and ``context`` in one request and one commit: every
        handling starts with them, and each round trip and commit is latency.

        The artifact is read first (its size is part of the context), but handed over only
        once the command found the handoff to be ``agent``'s and the artifact its input.
        """
        try:
            data = await self.artifacts.get(request.artifact_id)
        except ArtifactError as error:
            raise Refusal("invalid_request", str(error)) from None
        prefix = f"{request.handoff_id}/"
        intent = IntentRequest(
            request.workflow_id,
            prefix + "1",
            request.handoff_id,
            request.task,
            request.known_tasks,
        )
        context = ContextRequest(
            request.workflow_id, prefix + "2", [ArtifactDigest(request.artifact_id, len(data))]
        )
        resolve = self.steps.applying(agent, "intent", intent.step_key, self._intent(agent, intent))
        assemble = self.steps.applying(
            agent, "context", context.step_key, self._context(agent, context)
        )
        recorded_before = StateRequest(request.workflow_id, step_prefix=prefix)

        def begin(workflow: Workflow) -> BeginReply:
            state = state_page(self.steps.ledger, workflow, agent, recorded_before)
            resolve(workflow)
            handoff = workflow.handoffs.get(request.handoff_id, {})
            if handoff.get("artifactId") != request.artifact_id:
                raise Refusal("invalid_request", "artifactId is not the handoff's artifact")
            assemble(workflow)
            return BeginReply(data=data, state=state)

        return await self.steps.command(request.workflow_id, begin)

    async def intent(self, agent: str, request: IntentRequest) -> IntentReply:
        change = self._intent(agent, request)
        return await self.steps.step(agent, "intent", request.workflow_id, request.step_key, change)

    @staticmethod
    def _intent(agent: str, request: IntentRequest) -> Callable[[Workflow], IntentReply]:
        def change(workflow: Workflow) -> IntentReply:
            handoff = workflow.handoffs.get(request.handoff_id)
            if handoff is None or handoff["to"] != agent:
                raise Refusal("invalid_request", f"handoff {request.handoff_id} is not {agent}'s")
            if request.task not in request.known_tasks or request.task != handoff["task"]:
                reason = f"{agent} has no task {handoff['task']!r}; it knows {request.known_tasks}"
                workflow.fail(reason)  # nobody else will pick this handoff up
                raise Refusal("unknown_task", reason)
            workflow.resolve_intent(agent, request.handoff_id, request.task, request.step_key)
            return IntentReply(task=request.task)

        return change

    async def context(self, agent: str, request: ContextRequest) -> Ack:
        change = self._context(agent, request)
        return await self.steps.step(
            agent, "context", request.workflow_id, request.step_key, change
        )

    @staticmethod
    def _context(agent: str, request: ContextRequest) -> Callable[[Workflow], Ack]:
        artifacts = msgspec.to_builtins(request.artifacts)

        def change(workflow: Workflow) -> Ack:
            workflow.assemble_context(agent, artifacts, request.step_key)
            return Ack(step_key=request.step_key)

        return change

    async def reasoning(self, agent: str, request: ReasoningRequest) -> ReasoningReply:
        usage = msgspec.to_builtins(request.usage)
        cost = self.policy.model_cost(request.model, request.usage)

        def change(workflow: Workflow) -> ReasoningReply:
            workflow.record_reasoning(
                agent, request.purpose, request.model, request.output, usage, cost, request.step_key
            )
            if workflow.status == "stopped":
                raise Refusal(
                    "cost_budget_exceeded",
                    f"this model call took workflow {workflow.id} "
                    f"past its budget of {workflow.budget_usd} USD; it is stopped",
                )
            return ReasoningReply(
                step_key=request.step_key, output=request.output, stop_reason=request.stop_reason
            )

        return await self.steps.step(
            agent, "reasoning", request.workflow_id, request.step_key, change
        )

    async def checkpoint(self, agent: str, request: CheckpointRequest) -> Ack:
        def change(workflow: Workflow) -> Ack:
            cited = list(request.evidence_ids)
            workflow.reach_checkpoint(
                agent,
                request.name,
                request.data,
                request.step_key,
                cited=cited,
                backed_by=backing(workflow, agent, cited),
            )
            return Ack(step_key=request.step_key)

        return await self.steps.step(
            agent, "checkpoint", request.workflow_id, request.step_key, change
        )

    async def audit(self, agent: str, request: AuditRequest) -> Ack:
        def change(workflow: Workflow) -> Ack:
            workflow.note_audit(agent, request.note, request.data, request.step_key)
            return Ack(step_key=request.step_key)

        return await self.steps.step(agent, "audit", request.workflow_id, request.step_key, change)
