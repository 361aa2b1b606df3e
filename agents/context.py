"""``ctx``: what a handler may do, every bit of it through the runtime.

Each call below is one step with the key ``<handoffId>/<n>``, numbered in call
order. The key is deterministic as long as the handler is (the Temporal rule:
branch on what the steps returned, not on the clock). When a handler runs again
after a crash, steps that completed return their recorded replies: the tool is
not run twice and the model is not asked twice.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from agents.client import RuntimeClient, unwrap
from agents.model import Model, ModelRequest
from bus.artifacts import ArtifactStore
from handoff_schemas import (
    Ack,
    ArtifactDigest,
    AuditRequest,
    CheckpointRequest,
    ClaimAssertion,
    ContextRequest,
    DeniedActionRequest,
    Evidence,
    EvidenceReply,
    ExecuteReply,
    ExecuteRequest,
    Handoff,
    HandoffReply,
    HandoffRequest,
    IntentReply,
    IntentRequest,
    PermitReply,
    PermitRequest,
    ReasoningReply,
    ReasoningRequest,
    Reply,
    StateRequest,
    StepsReply,
    SummarizeRequest,
    SummaryReply,
    convert,
)
from handoff_schemas.runtime import StepRequest

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

REPAIR_ATTEMPTS = 2


class Permissions:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    async def verify(self, action: str, resource: str) -> PermitReply:
        """Ask the runtime; the answer is recorded, and re-checked when the action runs."""
        return await self._ctx._step(
            "permit", PermitRequest, PermitReply, action=action, resource=resource
        )


class Tools:
    """``ctx.tools.send_email(to=..., ...)``: a tool call the runtime checks and runs."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def __getattr__(self, tool: str) -> Any:
        async def call(**payload: Any) -> ExecuteReply:
            return await self._ctx._step(
                "execute", ExecuteRequest, ExecuteReply, tool=tool, payload=payload
            )

        return call


class Audit:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    async def record(self, note: str, **data: Any) -> None:
        await self._ctx._step("audit", AuditRequest, Ack, note=note, data=data)


class Context:
    def __init__(
        self,
        agent: str,
        handoff: Handoff,
        client: RuntimeClient,
        artifacts: ArtifactStore,
        model: Model,
        known_tasks: list[str],
        system_prompt: str,
    ) -> None:
        self.agent = agent
        self.incoming = handoff
        self.workflow_id = handoff.workflow_id
        self.model = model
        self.permissions = Permissions(self)
        self.tools = Tools(self)
        self.audit = Audit(self)
        self.artifact: bytes = b""
        self.state = StepsReply(workflow_id=self.workflow_id, status="", steps={}, checkpoints={})
        self._client = client
        self._artifacts = artifacts
        self._known_tasks = known_tasks
        self._system_prompt = system_prompt
        self._step_number = 0

    # -- the pipeline before the handler --------------------------------------

    async def begin(self) -> None:
        """Load recorded steps, resolve the intent, assemble the context."""
        self.state = await self._client.call(
            "state", StateRequest(workflow_id=self.workflow_id), StepsReply
        )
        await self._step(
            "intent",
            IntentRequest,
            IntentReply,
            handoff_id=self.incoming.handoff_id,
            task=self.incoming.task,
            known_tasks=self._known_tasks,
        )
        self.artifact = await self._artifacts.get(self.incoming.artifact_id)
        digest = ArtifactDigest(artifact_id=self.incoming.artifact_id, size=len(self.artifact))
        await self._step("context", ContextRequest, Ack, artifacts=[digest])

    def artifact_json(self) -> Any:
        return json.loads(self.artifact)

    # -- what a handler calls -------------------------------------------------

    async def reason(
        self,
        instructions: str,
        context: dict[str, Any],
        output_type: type[M],
        purpose: str = "decide",
    ) -> M:
        """Ask the model for an ``output_type``; record what it believed and what it cost."""
        key = self._next_key()
        recorded = self.state.steps.get(key)
        if recorded is not None:
            return output_type.model_validate(
                unwrap(convert(recorded, Reply), ReasoningReply).output
            )
        request = ModelRequest(self._system_prompt, instructions, context, output_type)
        for _ in range(REPAIR_ATTEMPTS + 1):
            result = await self.model.complete(request)
            try:
                decided = output_type.model_validate(result.output)
            except ValidationError as error:
                problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]
                request = ModelRequest(
                    self._system_prompt, instructions, context, output_type, problems
                )
                continue
            await self._client.call(
                "reasoning",
                ReasoningRequest(
                    workflow_id=self.workflow_id,
                    step_key=key,
                    purpose=purpose,
                    model=result.model,
                    output=result.output,
                    usage=result.usage,
                ),
                ReasoningReply,
            )
            return decided
        raise ValueError(
            f"the model gave no valid {output_type.__name__} after repairs: {problems}"
        )

    async def record_denied_action(self, action: str, resource: str, reason: str) -> Evidence:
        reply = await self._step(
            "denied",
            DeniedActionRequest,
            EvidenceReply,
            action=action,
            resource=resource,
            reason=reason,
        )
        return reply.evidence

    async def checkpoint(self, name: str, data: dict[str, Any] | None = None) -> None:
        await self._step("checkpoint", CheckpointRequest, Ack, name=name, data=data or {})
        self.state.checkpoints[name] = data or {}

    async def put_artifact(self, data: bytes) -> str:
        return await self._artifacts.put(data)

    async def handoff(
        self,
        to: str,
        task: str,
        artifact: bytes,
        status: str,
        scope: str,
        evidence: Evidence | None = None,
    ) -> str:
        """Hand work to another agent: the payload goes to the store, the handoff carries its id."""
        artifact_id = await self.put_artifact(artifact)
        reply = await self._step(
            "handoff",
            HandoffRequest,
            HandoffReply,
            to=to,
            task=task,
            artifact_id=artifact_id,
            evidence_id=evidence.audit_id if evidence else None,
            status=status,
            scope=scope,
        )
        return reply.handoff_id

    async def summarize(
        self, summary: str, asserts: str, evidence: list[Evidence], statement: str | None = None
    ) -> SummaryReply:
        """The final claim: the runtime verifies it against the evidence before completing."""
        claim = ClaimAssertion(
            statement=statement or summary,
            asserts=asserts,
            evidence_ids=[e.audit_id for e in evidence],
        )
        return await self._step(
            "summarize", SummarizeRequest, SummaryReply, summary=summary, claim=claim
        )

    # -- steps ----------------------------------------------------------------

    def _next_key(self) -> str:
        self._step_number += 1
        return f"{self.incoming.handoff_id}/{self._step_number}"

    async def _step(
        self, op: str, request_type: type[StepRequest], into: type[T], **fields: Any
    ) -> T:
        """Run the next numbered step, or return its recorded reply."""
        key = self._next_key()
        recorded = self.state.steps.get(key)
        if recorded is not None:
            return unwrap(convert(recorded, Reply), into)
        request = request_type(workflow_id=self.workflow_id, step_key=key, **fields)
        return await self._client.call(op, request, into)
