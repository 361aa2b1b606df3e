"""``ctx``: what a handler may do, every bit of it through the runtime.

Each call below is one step with the key ``<handoffId>/<n>``, numbered in call
order. The key is deterministic as long as the handler is (the Temporal rule:
branch on what the steps returned, not on the clock). When a handler runs again
after a crash, steps that completed return their recorded replies: the tool is
not run twice and the model is not asked twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from agents.client import RuntimeClient, RuntimeRefused, unwrap
from agents.model import Model, ModelRequest
from agents.model_calls import ModelCalls, WorkflowHalted
from bus.runtime.catalogue import ToolSpec
from handoff_schemas import (
    Ack,
    ArtifactGetRequest,
    ArtifactPutReply,
    ArtifactPutRequest,
    ArtifactReply,
    AuditRequest,
    AwaitSignalRequest,
    BeginReply,
    BeginRequest,
    CheckpointRequest,
    ClaimAssertion,
    ClaimItem,
    DeniedActionRequest,
    Evidence,
    EvidenceReply,
    ExecuteReply,
    ExecuteRequest,
    FailureRequest,
    Handoff,
    HandoffReply,
    HandoffRequest,
    PermitReply,
    PermitRequest,
    Reply,
    RetryAdvice,
    SignalReply,
    StateRequest,
    StepsReply,
    SummarizeRequest,
    SummaryReply,
    convert,
)
from handoff_schemas.runtime import StepRequest

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
Verifier = Callable[[M], str | None]
"""Checks a model's decision; returns the problem, or None when it is acceptable."""


def validation_problems(error: ValidationError) -> list[str]:
    return [f"{'.'.join(map(str, e['loc'])) or '$'}: {e['msg']}" for e in error.errors()]


def claim_items(evidence: Sequence[Evidence | ClaimItem], status: str) -> list[ClaimItem]:
    """Claim items for records (each asserting what it records, with ``status``) or items."""
    items = []
    for cited in evidence:
        if isinstance(cited, ClaimItem):
            items.append(cited)
        elif isinstance(cited, Evidence):
            items.append(
                ClaimItem(
                    action=cited.action,
                    target=cited.resource,
                    status=status,
                    evidence_id=cited.audit_id,
                    facts=dict(cited.facts),
                )
            )
        else:
            raise TypeError(
                f"a claim cites evidence records or ClaimItem values, not {cited!r}: "
                "name the action, target and status an evidence id is said to show"
            )
    return items


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
        self._model_calls = ModelCalls(self)
        self.artifact: bytes = b""
        self.state = StepsReply(workflow_id=self.workflow_id, status="", steps={}, checkpoints={})
        self._client = client
        self._known_tasks = known_tasks
        self._system_prompt = system_prompt
        self._step_number = 0

    # -- the pipeline before the handler --------------------------------------

    async def begin(self) -> None:
        """Resolve the intent, read the artifact and record the context (steps 1 and 2, one
        request), and load what this handling recorded before, every page of it."""
        request = BeginRequest(
            self.workflow_id,
            self.incoming.handoff_id,
            self.incoming.task,
            self._known_tasks,
            self.incoming.artifact_id,
        )
        begun = await self._client.call("begin", request, BeginReply)
        self.artifact, self.state = begun.data, begun.state
        self._step_number = 2
        prefix = f"{self.incoming.handoff_id}/"
        while self.state.next_cursor is not None:
            request = StateRequest(self.workflow_id, prefix, cursor=self.state.next_cursor)
            page = await self._client.call("state", request, StepsReply)
            self.state.steps.update(page.steps)
            self.state.checkpoints.update(page.checkpoints)
            self.state.status, self.state.next_cursor = page.status, page.next_cursor

    def artifact_json(self) -> Any:
        return json.loads(self.artifact)

    # -- what a handler calls -------------------------------------------------

    async def reason(
        self,
        instructions: str,
        context: dict[str, Any],
        output_type: type[M],
        purpose: str = "decide",
        verify: Verifier[M] | None = None,
    ) -> M:
        """Ask the model for an ``output_type``; record what it believed and what it cost.

        Output that does not validate is reported (``invalid_tool_payload``) and,
        if the runtime allows a repair, the model sees its previous answer and the
        exact errors and answers again. A decision ``verify`` rejects (it returns the
        problem) is reported as ``bad_reasoning`` and, if allowed, the model replans
        from a fresh context that notes only why the earlier plan was rejected. An
        answer cut off at its token limit, or a refusal, is governed by :meth:`_answer`.
        """
        request = ModelRequest(self._system_prompt, instructions, context, output_type)
        while True:
            output, request = await self._answer(request, purpose)
            try:
                decided = output_type.model_validate(output)
            except ValidationError as error:
                repair = validation_problems(error)
                await self._report("invalid_tool_payload", "; ".join(repair))
                request = replace(request, repair=repair, previous=output)
                continue
            problem = verify(decided) if verify else None
            if problem is None:
                return decided
            await self._report("bad_reasoning", problem)
            note = f"\n\nAn earlier plan was rejected: {problem}. Plan again."
            request = replace(request, instructions=instructions + note, repair=[], previous=None)

    async def act(
        self,
        tool: ToolSpec | str,
        instructions: str,
        context: dict[str, Any],
        payload_type: type[BaseModel] | None = None,
    ) -> ExecuteReply:
        """Let the model write a tool's payload, and repair it when the runtime rejects it.

        ``tool`` is the declared tool (its input type is what the model writes), or a
        tool's name with the ``payload_type`` to ask the model for.
        """
        if isinstance(tool, ToolSpec):
            tool, payload_type = tool.name, tool.input
        if payload_type is None:
            raise TypeError(f"act({tool!r}): give the tool itself, or its payload_type")
        request = ModelRequest(self._system_prompt, instructions, context, payload_type)
        while True:
            payload, request = await self._answer(request, f"payload:{tool}")
            try:
                return await getattr(self.tools, tool)(**payload)
            except RuntimeRefused as refused:
                advice = refused.error.retry
                if (
                    refused.code != "invalid_tool_payload"
                    or advice is None
                    or advice.strategy != "repair"
                ):
                    raise
                repair = [f"{f.field}: {f.message}" for f in refused.error.fields]
                request = replace(request, repair=repair, previous=payload)

    async def _answer(
        self, request: ModelRequest, purpose: str
    ) -> tuple[dict[str, Any], ModelRequest]:
        """The model's whole answer, and the request that got it.

        An answer cut off at its token limit is reported (``model_truncated``) and, if
        the runtime allows a repair, asked for again with more room, showing the model
        what it had written. A refusal is reported (``model_refused``): the runtime
        escalates it to a human, and an approval lets the model be asked once more.
        """
        while True:
            answer = await self._model_calls.ask(request, purpose)
            if answer.stop_reason == "refusal":
                await self._report("model_refused", f"{purpose}: the model declined to answer")
                continue
            if answer.stop_reason != "max_tokens":
                return answer.output, request
            await self._report(
                "model_truncated",
                f"{purpose}: the answer was cut off at its output token limit "
                f"(attempt {request.more_room + 1})",
            )
            request = replace(
                request,
                more_room=request.more_room + 1,
                previous=answer.output,
                repair=["$: the answer was cut off at the output token limit; answer in full"],
            )

    async def _report(self, kind: str, detail: str) -> RetryAdvice:
        """Report a model failure; go on only if the runtime says the model may try again."""
        advice = await self._step("failure", FailureRequest, RetryAdvice, kind=kind, detail=detail)
        if advice.strategy not in ("repair", "replan"):  # the strategies that ask the model
            raise WorkflowHalted(kind, detail, advice)
        return advice

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

    async def checkpoint(
        self, name: str, data: dict[str, Any] | None = None, evidence: Sequence[Evidence] = ()
    ) -> None:
        """Declare a named point; ``evidence`` is what backs it (shown beside it, or its lack)."""
        await self._step(
            "checkpoint",
            CheckpointRequest,
            Ack,
            name=name,
            data=data or {},
            evidence_ids=[e.audit_id for e in evidence],
        )
        self.state.checkpoints[name] = data or {}

    async def wait_for_signal(self, name: str) -> dict[str, Any]:
        """The data of the next signal ``name`` an operator sends to this workflow.

        Without one yet, the handling stops here (the runtime records that it waits) and
        its handoff is delivered again when the signal comes: the steps before replay, and
        this call returns the signal's data. The task's deadline still applies.
        """
        reply = await self._step("wait", AwaitSignalRequest, SignalReply, name=name)
        return reply.data

    async def put_artifact(self, data: bytes) -> str:
        """Store ``data`` in this workflow through the runtime (agents cannot write the store)."""
        request = ArtifactPutRequest(data=data, workflow_id=self.workflow_id)
        return (await self._client.call("artifact_put", request, ArtifactPutReply)).artifact_id

    async def get_artifact(self, artifact_id: str) -> bytes:
        """One of this workflow's artifacts, read through the runtime."""
        request = ArtifactGetRequest(artifact_id=artifact_id, workflow_id=self.workflow_id)
        return (await self._client.call("artifact_get", request, ArtifactReply)).data

    async def handoff(
        self,
        to: str,
        task: str,
        artifact: bytes,
        status: str,
        scope: str,
        evidence: Evidence | Sequence[Evidence | ClaimItem] | None = None,
    ) -> str:
        """Hand work to another agent: the payload goes to the store, the handoff carries its id.

        A ``completed`` or ``verified`` handoff is a claim: ``evidence`` holds the records
        (or explicit :class:`ClaimItem` values) it rests on, and the runtime refuses the
        handoff unless every item verifies and the task is done.
        """
        if isinstance(evidence, Evidence):
            evidence = [evidence]
        items = claim_items(evidence or [], "succeeded")
        artifact_id = await self.put_artifact(artifact)
        reply = await self._step(
            "handoff",
            HandoffRequest,
            HandoffReply,
            to=to,
            task=task,
            artifact_id=artifact_id,
            evidence_id=items[0].evidence_id if items else None,
            items=items,
            status=status,
            scope=scope,
        )
        return reply.handoff_id

    async def summarize(
        self,
        summary: str,
        asserts: str = "succeeded",
        evidence: Sequence[Evidence | ClaimItem] = (),
    ) -> SummaryReply:
        """The final claim: the runtime verifies it item by item before completing.

        Each evidence record becomes an item asserting what the record says (its action,
        target and facts) with the status ``asserts``; a :class:`ClaimItem` is sent as
        written. ``summary`` is kept as a remark, shown but not checked: the claim's
        statement is generated from its items.
        """
        claim = ClaimAssertion(items=claim_items(evidence, asserts), remarks=summary)
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
