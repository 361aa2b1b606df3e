"""The runtime: the trusted service agents ask, and the only writer of the ledger.

Requests arrive on ``<prefix>.rt.<agent>.<op>``; the ``<agent>`` token is who
is asking. For each operation the runtime checks, records, and only then acts:
a tool runs after an allowing decision the runtime itself made, with the
resource read from the tool's payload; a handoff is delivered (by the relay)
only after it was validated and recorded.

Every request that changes a workflow carries a step key. A key that already
completed gets its recorded reply back, so a handler that runs again after a
crash neither repeats a side effect nor pays for a model twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import uuid4

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import ValidationError

from bus.artifacts import ArtifactError, ArtifactStore
from bus.ledger import Ledger, LedgerError, Workflow
from bus.policy import Policy
from bus.settings import Settings
from bus.subjects import Subjects
from bus.tool_host import pydantic_field_errors
from bus.tools import CATALOGUE
from handoff_schemas import (
    OPERATIONS,
    Ack,
    AuditRequest,
    CheckpointRequest,
    ContextRequest,
    DeniedActionRequest,
    ErrorInfo,
    EvidenceReply,
    ExecuteReply,
    ExecuteRequest,
    FieldError,
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
    SchemaError,
    StartReply,
    StartRequest,
    StateRequest,
    StepsReply,
    SummarizeRequest,
    SummaryReply,
    ToolCall,
    ToolResult,
    decode,
    encode,
)
from handoff_schemas.runtime import StepRequest

log = logging.getLogger(__name__)
T = TypeVar("T")


class Refusal(LedgerError):
    """A request the runtime answers with a structured error."""

    def __init__(self, code: str, message: str, fields: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.fields = fields or []


def error_reply(code: str, message: str, fields: list[FieldError] | None = None) -> Reply:
    return Reply(ok=False, error=ErrorInfo(code=code, message=message, fields=fields or []))


def as_reply(error: LedgerError) -> Reply:
    return error_reply(error.code, str(error), getattr(error, "fields", None))


class Runtime:
    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        policy: Policy,
        nc: Client,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.prefix)
        self.ledger = ledger
        self.policy = policy
        self.nc = nc
        self.artifacts = ArtifactStore(nc.jetstream(), self.subjects.artifact_bucket)
        self.on_commit = on_commit
        # One thread owns the ledger in this process: commits never block the
        # event loop, and this replica's commits never race each other.
        self._ledger_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, Callable[[str, Any], Awaitable[Any]]] = {
            "start": self.start,
            "state": self.state,
            "intent": self.intent,
            "context": self.context,
            "reasoning": self.reasoning,
            "permit": self.permit,
            "denied": self.denied,
            "execute": self.execute,
            "checkpoint": self.checkpoint,
            "audit": self.audit,
            "handoff": self.handoff,
            "summarize": self.summarize,
        }

    async def serve(self) -> None:
        await self.nc.subscribe(self.subjects.runtime_all, queue="runtime", cb=self._on_message)
        await self.nc.flush()

    def close(self) -> None:
        self._ledger_thread.shutdown(wait=True)

    # -- dispatch -------------------------------------------------------------

    async def _on_message(self, msg: Msg) -> None:
        # One task per request: a slow tool call must not hold up other agents.
        task = asyncio.create_task(self._respond(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _respond(self, msg: Msg) -> None:
        _, _, agent, op = msg.subject.rsplit(".", 3)
        reply = await self.dispatch(agent, op, msg.data)
        if msg.reply:
            await msg.respond(encode(reply))

    async def dispatch(self, agent: str, op: str, data: bytes) -> Reply:
        """Decode, run and answer one request; every failure becomes an error reply."""
        request_type = OPERATIONS.get(op)
        if request_type is None:
            return error_reply(
                "unknown_operation", f"no operation {op!r}; known: {sorted(OPERATIONS)}"
            )
        try:
            request = decode(data, request_type)
        except SchemaError as error:
            if op == "handoff":
                await self._record_rejected_handoff(agent, data, str(error))
            return error_reply("invalid_request", str(error), error.fields)
        try:
            if isinstance(request, StepRequest):
                recorded = (await self._read(request.workflow_id)).steps.get(request.step_key)
                if recorded is not None:
                    return msgspec.convert(recorded, Reply)
            result = await self._handlers[op](agent, request)
        except LedgerError as error:
            return as_reply(error)
        except Exception:
            log.exception("internal error in %s from %s", op, agent)
            return error_reply("internal", f"the runtime failed to handle {op}; it was logged")
        return Reply(ok=True, result=msgspec.to_builtins(result))

    # -- ledger access --------------------------------------------------------

    async def _read(self, workflow_id: str) -> Workflow:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._ledger_thread, self.ledger.workflow, workflow_id)

    async def _command(self, workflow_id: str, change: Callable[[Workflow], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._ledger_thread, self.ledger.command, workflow_id, change
            )
        finally:
            self.on_commit()

    async def _step(
        self, agent: str, op: str, request: StepRequest, change: Callable[[Workflow], Any]
    ) -> Any:
        """Apply ``change`` as step ``request.step_key`` of an open workflow, and record its reply.

        A refusal raised by ``change`` is recorded as the step's reply too: asked
        again, the runtime refuses again without re-deciding.
        """

        def apply(workflow: Workflow) -> Any:
            workflow.require_open()
            workflow.require_participant(agent)
            recorded = workflow.steps.get(request.step_key)
            if recorded is not None:  # another replica finished it first
                return msgspec.convert(recorded, Reply).result
            try:
                result = change(workflow)
            except Refusal as refusal:
                workflow.complete_step(request.step_key, op, msgspec.to_builtins(as_reply(refusal)))
                raise
            reply = Reply(ok=True, result=msgspec.to_builtins(result))
            workflow.complete_step(request.step_key, op, msgspec.to_builtins(reply))
            return result

        return await self._command(request.workflow_id, apply)

    # -- operations -----------------------------------------------------------

    async def start(self, agent: str, request: StartRequest) -> StartReply:
        await self._require_artifact(request.artifact_id)
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
        loop = asyncio.get_running_loop()
        workflow = await loop.run_in_executor(
            self._ledger_thread,
            self.ledger.start,
            request.task,
            request.to,
            request.artifact_id,
            request.scope,
            agent,
            msgspec.to_builtins(handoff),
        )
        self.on_commit()
        return StartReply(workflow_id=str(workflow.id), handoff_id=handoff.handoff_id)

    async def state(self, agent: str, request: StateRequest) -> StepsReply:
        workflow = await self._read(request.workflow_id)
        return StepsReply(
            workflow_id=request.workflow_id,
            status=workflow.status,
            steps=workflow.steps,
            checkpoints=workflow.checkpoints,
        )

    async def intent(self, agent: str, request: IntentRequest) -> IntentReply:
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

        return await self._step(agent, "intent", request, change)

    async def context(self, agent: str, request: ContextRequest) -> Ack:
        artifacts = msgspec.to_builtins(request.artifacts)

        def change(workflow: Workflow) -> Ack:
            workflow.assemble_context(agent, artifacts, request.step_key)
            return Ack(step_key=request.step_key)

        return await self._step(agent, "context", request, change)

    async def reasoning(self, agent: str, request: ReasoningRequest) -> ReasoningReply:
        usage = msgspec.to_builtins(request.usage)

        def change(workflow: Workflow) -> ReasoningReply:
            workflow.record_reasoning(
                agent, request.purpose, request.model, request.output, usage, request.step_key
            )
            return ReasoningReply(step_key=request.step_key, output=request.output)

        return await self._step(agent, "reasoning", request, change)

    async def permit(self, agent: str, request: PermitRequest) -> PermitReply:
        decision = self.policy.decide(agent, request.action, request.resource)

        def change(workflow: Workflow) -> PermitReply:
            workflow.decide_permission(
                agent,
                request.action,
                request.resource,
                decision.permission,
                decision.rule,
                decision.reason,
                request.step_key,
            )
            return PermitReply(
                permission=decision.permission, rule=decision.rule, reason=decision.reason
            )

        return await self._step(agent, "permit", request, change)

    async def denied(self, agent: str, request: DeniedActionRequest) -> EvidenceReply:
        decision = self.policy.decide(agent, request.action, request.resource)
        if decision.allowed:
            raise Refusal(
                "invalid_request",
                f"the policy allows {request.action} on {request.resource} (rule {decision.rule}); "
                "there is no denial to record",
            )

        def change(workflow: Workflow) -> EvidenceReply:
            evidence = workflow.add_evidence(
                actor=agent,
                action=request.action,
                resource=request.resource,
                permission="denied",
                rule=decision.rule,
                status="denied",
                refs={"agentReason": request.reason},
            )
            return EvidenceReply(evidence=evidence)

        return await self._step(agent, "denied", request, change)

    async def execute(self, agent: str, request: ExecuteRequest) -> ExecuteReply:
        tool_class = CATALOGUE.get(request.tool)
        if tool_class is None:
            raise Refusal(
                "invalid_request", f"no tool {request.tool!r}; known: {sorted(CATALOGUE)}"
            )
        try:
            payload = tool_class.payload.model_validate(request.payload)
        except ValidationError as error:
            fields = pydantic_field_errors(error)
            await self._classify(agent, request, "invalid_tool_payload", fields)
            raise Refusal(
                "invalid_tool_payload", f"invalid {request.tool} payload", fields
            ) from None
        resource = tool_class.resource(payload)
        decision = self.policy.decide(agent, request.tool, resource)

        def decide(workflow: Workflow) -> None:
            workflow.require_open()
            workflow.require_participant(agent)
            if request.step_key in workflow.permissions:
                return  # decided on an earlier, interrupted attempt of this step
            workflow.request_action(agent, request.tool, resource, request.step_key)
            workflow.decide_permission(
                agent,
                request.tool,
                resource,
                decision.permission,
                decision.rule,
                decision.reason,
                request.step_key,
            )

        await self._command(request.workflow_id, decide)
        if not decision.allowed:
            deny = lambda wf: self._deny(wf, agent, request.tool, resource, decision)  # noqa: E731
            return await self._step(agent, "execute", request, deny)

        started = time.monotonic()
        result = await self._call_tool(agent, request)
        duration_ms = (time.monotonic() - started) * 1000
        if result.status == "invalid_payload":
            await self._classify(agent, request, "invalid_tool_payload", result.fields)
            raise Refusal("invalid_tool_payload", result.error or "invalid payload", result.fields)
        if result.status == "failed" and result.transient:
            await self._classify(
                agent, request, "tool_error", [FieldError(field="$", message=result.error or "")]
            )
            raise Refusal("tool_error", f"{request.tool} failed (transient): {result.error}")

        def record(workflow: Workflow) -> ExecuteReply:
            workflow.execute_tool(
                agent, request.tool, result.status, duration_ms, 1, request.step_key
            )
            evidence = workflow.add_evidence(
                actor=agent,
                action=request.tool,
                resource=resource,
                permission="allowed",
                rule=decision.rule,
                tool=request.tool,
                status=result.status,
                refs=result.refs,
            )
            output = result.output if result.status == "succeeded" else {"error": result.error}
            return ExecuteReply(evidence=evidence, output=output)

        return await self._step(agent, "execute", request, record)

    @staticmethod
    def _deny(workflow: Workflow, agent: str, tool: str, resource: str, decision: Any) -> None:
        evidence = workflow.add_evidence(
            actor=agent,
            action=tool,
            resource=resource,
            permission="denied",
            rule=decision.rule,
            tool=tool,
            status="denied",
        )
        raise Refusal(
            "permission_denied",
            f"{decision.reason} (rule {decision.rule}); evidence {evidence.audit_id}",
            [FieldError(field="evidenceId", message=evidence.audit_id)],
        )

    async def _call_tool(self, agent: str, request: ExecuteRequest) -> ToolResult:
        call = ToolCall(
            idempotency_key=f"{request.workflow_id}/{request.step_key}",
            workflow_id=request.workflow_id,
            actor=agent,
            payload=request.payload,
        )
        try:
            msg = await self.nc.request(
                self.subjects.tool(request.tool), encode(call), timeout=self.settings.tool_timeout
            )
        except NatsTimeout:
            await self._classify(agent, request, "tool_timeout", [])
            raise Refusal(
                "tool_timeout", f"{request.tool} did not answer in {self.settings.tool_timeout}s"
            ) from None
        except NoRespondersError:
            await self._classify(agent, request, "tool_error", [])
            raise Refusal("tool_error", f"no tool host serves {request.tool}") from None
        return decode(msg.data, ToolResult)

    async def _classify(
        self, agent: str, request: StepRequest, kind: str, fields: list[FieldError]
    ) -> None:
        detail = "; ".join(f"{f.field}: {f.message}" for f in fields)

        def change(workflow: Workflow) -> None:
            workflow.require_participant(agent)
            workflow.classify_failure(agent, kind, detail, request.step_key)

        await self._command(request.workflow_id, change)

    async def checkpoint(self, agent: str, request: CheckpointRequest) -> Ack:
        def change(workflow: Workflow) -> Ack:
            workflow.reach_checkpoint(agent, request.name, request.data, request.step_key)
            return Ack(step_key=request.step_key)

        return await self._step(agent, "checkpoint", request, change)

    async def audit(self, agent: str, request: AuditRequest) -> Ack:
        def change(workflow: Workflow) -> Ack:
            workflow.note_audit(agent, request.note, request.data, request.step_key)
            return Ack(step_key=request.step_key)

        return await self._step(agent, "audit", request, change)

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
            await self._require_artifact(request.artifact_id)
        except Refusal as refusal:
            reason = str(refusal)
            await self._command(request.workflow_id, lambda wf: wf.reject_handoff(fields, reason))
            raise Refusal("invalid_handoff", reason) from None

        def change(workflow: Workflow) -> HandoffReply:
            workflow.send_handoff(fields)
            return HandoffReply(handoff_id=handoff.handoff_id)

        return await self._step(agent, "handoff", request, change)

    async def _record_rejected_handoff(self, agent: str, data: bytes, reason: str) -> None:
        """Record a malformed handoff in its workflow, when the workflow can be told."""
        try:
            raw = msgspec.json.decode(data)
            workflow_id = str(raw["workflowId"])
        except (msgspec.DecodeError, KeyError, TypeError):
            return
        try:
            await self._command(
                workflow_id, lambda wf: wf.reject_handoff({"from": agent, **raw}, reason)
            )
        except LedgerError:
            pass  # an unknown workflow: the error reply is all there is to give

    async def summarize(self, agent: str, request: SummarizeRequest) -> SummaryReply:
        def change(workflow: Workflow) -> SummaryReply:
            claim = workflow.make_claim(agent, request.summary, request.claim)
            if claim.verdict == "verified":
                workflow.complete(agent, claim.claim_id)
            else:
                workflow.raise_escalation(
                    f"final claim is {claim.verdict}: {claim.reason}", claim.claim_id
                )
            return SummaryReply(claim=claim, workflow_status=workflow.status)

        return await self._step(agent, "summarize", request, change)

    async def _require_artifact(self, artifact_id: str) -> None:
        try:
            await self.artifacts.get(artifact_id)
        except ArtifactError as error:
            raise Refusal("invalid_request", str(error)) from None
