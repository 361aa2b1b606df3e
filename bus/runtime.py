"""The runtime: the trusted service agents ask, and the only writer of the ledger.

Requests arrive on ``<prefix>.rt.<agent>.<op>``; the ``<agent>`` token is who
is asking. For each operation the runtime checks, records, and only then acts:
a tool runs after an allowing decision the runtime itself made, with the
resource read from the tool's payload; a handoff is delivered (by the relay)
only after it was validated and recorded.

Every request that changes a workflow carries a step key. A key that already
completed gets its recorded reply back, so a handler that runs again after a
crash neither repeats a side effect nor pays for a model twice.

Failures follow the policy's failure table (:mod:`bus.governance`): the
runtime retries tool calls itself, tells the agent when its model may repair
or replan (if the budget covers it), escalates to a human, or stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar
from uuid import uuid4

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import ValidationError

from bus import telemetry
from bus.artifacts import ArtifactError, ArtifactStore
from bus.governance import after_failure, granted, handoff_of
from bus.ledger import Ledger, LedgerError, Workflow
from bus.policy import Decision, Policy
from bus.settings import Settings
from bus.subjects import OPERATOR, Subjects
from bus.tool_host import pydantic_field_errors
from bus.tools import CATALOGUE, Tool
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
    FailureRequest,
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
    ResolveReply,
    ResolveRequest,
    RetryAdvice,
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

INCOMING_TRACE: ContextVar[str] = ContextVar("incoming_traceparent", default="")
"""The W3C traceparent of the request being handled (each request is its own task)."""


class Refusal(LedgerError):
    """A request the runtime answers with a structured error."""

    def __init__(
        self,
        code: str,
        message: str,
        fields: list[FieldError] | None = None,
        retry: RetryAdvice | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.fields = fields or []
        self.retry = retry


class ToolUnavailable(Exception):
    """No answer from a tool host: a timeout, or no host at all (both transient)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def error_reply(
    code: str,
    message: str,
    fields: list[FieldError] | None = None,
    retry: RetryAdvice | None = None,
) -> Reply:
    return Reply(
        ok=False, error=ErrorInfo(code=code, message=message, fields=fields or [], retry=retry)
    )


def as_reply(error: LedgerError) -> Reply:
    return error_reply(
        error.code, str(error), getattr(error, "fields", None), getattr(error, "retry", None)
    )


def replayed(reply: Reply) -> Any:
    """A recorded reply again: its result, or its refusal raised again."""
    if reply.error is not None:
        error = reply.error
        raise Refusal(error.code, error.message, list(error.fields), error.retry)
    return reply.result


def ok_reply(result: Any) -> dict[str, Any]:
    return msgspec.to_builtins(Reply(ok=True, result=msgspec.to_builtins(result)))


class Runtime:
    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        policy: Policy,
        nc: Client,
        on_commit: Callable[[], None] = lambda: None,
        tools: dict[str, type[Tool]] | None = None,
    ) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.prefix)
        self.ledger = ledger
        self.policy = policy
        self.nc = nc
        self.tools = tools or CATALOGUE
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
            "failure": self.failure,
            "resolve": self.resolve,
        }

    async def serve(self) -> None:
        await self.nc.subscribe(self.subjects.runtime_all, queue="runtime", cb=self._on_message)
        await self.nc.subscribe(
            self.subjects.max_deliveries_advisory(), queue="runtime", cb=self._on_dead_letter
        )
        await self.nc.flush()

    async def _on_dead_letter(self, msg: Msg) -> None:
        """An inbox message ran out of deliveries: record it where people will look."""
        advisory = msgspec.json.decode(msg.data)
        stored = await self.nc.jetstream().get_msg(advisory["stream"], advisory["stream_seq"])
        try:
            handoff = msgspec.to_builtins(decode(stored.data or b"", Handoff))
            await self._command(
                handoff["workflowId"], lambda wf: wf.dead_letter(handoff, advisory["deliveries"])
            )
        except (SchemaError, LedgerError) as error:
            log.error("dead letter %s could not be recorded: %s", advisory, error)
            return
        log.warning(
            "handoff %s dead-lettered after %s deliveries",
            handoff["handoffId"],
            advisory["deliveries"],
        )

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
        log.debug("request %s from %s", op, agent)
        INCOMING_TRACE.set(telemetry.traceparent(msg.headers))
        with telemetry.attached(msg.headers):
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
                key = request.step_key
                recorded = await self._read(request.workflow_id, lambda wf: wf.steps.get(key))
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

    async def _read(self, workflow_id: str, view: Callable[[Workflow], T]) -> T:
        """``view`` of a workflow, taken in the ledger thread (no other thread touches it)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._ledger_thread, self.ledger.read, workflow_id, view)

    async def _command(self, workflow_id: str, change: Callable[[Workflow], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._ledger_thread, self.ledger.command, workflow_id, change
            )
        finally:
            self.on_commit()

    async def _step(
        self,
        agent: str,
        op: str,
        workflow_id: str,
        step_key: str,
        change: Callable[[Workflow], Any],
        require_open: bool = True,
        redo: bool = False,
    ) -> Any:
        """Apply ``change`` as one step of the workflow, and record its reply.

        A refusal raised by ``change`` is recorded as the step's reply too: asked
        again, the runtime refuses again without re-deciding. Only ``redo`` (a
        human approved what was refused) replaces a step's recorded reply.
        """

        trace_id = telemetry.trace_id(INCOMING_TRACE.get())

        def apply(workflow: Workflow) -> Any:
            if require_open:
                workflow.require_open()
            workflow.require_participant(agent)
            recorded = workflow.steps.get(step_key)
            if recorded is not None and not redo:  # another replica finished it first
                return replayed(msgspec.convert(recorded, Reply))
            try:
                result = change(workflow)
            except Refusal as refusal:
                refused = msgspec.to_builtins(as_reply(refusal))
                workflow.complete_step(step_key, op, refused, trace_id)
                raise
            workflow.complete_step(step_key, op, ok_reply(result), trace_id)
            return result

        return await self._command(workflow_id, apply)

    async def _refuse_step(
        self,
        agent: str,
        op: str,
        workflow_id: str,
        step_key: str,
        refusal: Refusal,
        require_open: bool = True,
        redo: bool = False,
    ) -> NoReturn:
        """Record ``refusal`` as the step's reply, then raise it."""

        def refuse(workflow: Workflow) -> None:
            raise refusal

        await self._step(agent, op, workflow_id, step_key, refuse, require_open, redo)
        raise AssertionError("unreachable: _step re-raises the refusal")

    # -- starting and reading -------------------------------------------------

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
        budget = (
            request.budget_usd if request.budget_usd is not None else self.policy.budget.default_usd
        )
        loop = asyncio.get_running_loop()
        with telemetry.span(f"start_workflow {request.task}", **{"gen_ai.agent.name": request.to}):
            workflow = await loop.run_in_executor(
                self._ledger_thread,
                self.ledger.start,
                request.task,
                request.to,
                request.artifact_id,
                request.scope,
                agent,
                budget,
                msgspec.to_builtins(handoff),
                telemetry.traceparent(),  # the workflow's trace starts here (or at the caller)
            )
        self.on_commit()
        return StartReply(workflow_id=str(workflow.id), handoff_id=handoff.handoff_id)

    async def state(self, agent: str, request: StateRequest) -> StepsReply:
        def view(workflow: Workflow) -> StepsReply:  # copies, taken in the ledger thread
            return StepsReply(
                workflow_id=request.workflow_id,
                status=workflow.status,
                steps=dict(workflow.steps),
                checkpoints=dict(workflow.checkpoints),
            )

        return await self._read(request.workflow_id, view)

    # -- the pipeline ---------------------------------------------------------

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

        return await self._step(agent, "intent", request.workflow_id, request.step_key, change)

    async def context(self, agent: str, request: ContextRequest) -> Ack:
        artifacts = msgspec.to_builtins(request.artifacts)

        def change(workflow: Workflow) -> Ack:
            workflow.assemble_context(agent, artifacts, request.step_key)
            return Ack(step_key=request.step_key)

        return await self._step(agent, "context", request.workflow_id, request.step_key, change)

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
            return ReasoningReply(step_key=request.step_key, output=request.output)

        return await self._step(agent, "reasoning", request.workflow_id, request.step_key, change)

    async def permit(self, agent: str, request: PermitRequest) -> PermitReply:
        def change(workflow: Workflow) -> PermitReply:
            decision = self.policy.decide(
                agent, request.action, request.resource, workflow.rule_uses()
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

        return await self._step(agent, "permit", request.workflow_id, request.step_key, change)

    async def denied(self, agent: str, request: DeniedActionRequest) -> EvidenceReply:
        def change(workflow: Workflow) -> EvidenceReply:
            decision = self.policy.decide(
                agent, request.action, request.resource, workflow.rule_uses()
            )
            if decision.allowed:
                raise Refusal(
                    "invalid_request",
                    f"the policy allows {request.action} on {request.resource} "
                    f"(rule {decision.rule}); there is no denial to record",
                )
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

        return await self._step(agent, "denied", request.workflow_id, request.step_key, change)

    async def checkpoint(self, agent: str, request: CheckpointRequest) -> Ack:
        def change(workflow: Workflow) -> Ack:
            workflow.reach_checkpoint(agent, request.name, request.data, request.step_key)
            return Ack(step_key=request.step_key)

        return await self._step(agent, "checkpoint", request.workflow_id, request.step_key, change)

    async def audit(self, agent: str, request: AuditRequest) -> Ack:
        def change(workflow: Workflow) -> Ack:
            workflow.note_audit(agent, request.note, request.data, request.step_key)
            return Ack(step_key=request.step_key)

        return await self._step(agent, "audit", request.workflow_id, request.step_key, change)

    # -- tools ----------------------------------------------------------------

    async def execute(self, agent: str, request: ExecuteRequest) -> ExecuteReply:
        tool = self.tools.get(request.tool)
        if tool is None:
            raise Refusal(
                "invalid_request", f"no tool {request.tool!r}; known: {sorted(self.tools)}"
            )
        try:
            payload = tool.payload.model_validate(request.payload)
        except ValidationError as error:
            await self._invalid_payload(agent, request, pydantic_field_errors(error))
        resource = tool.resource(payload)
        action = {"tool": request.tool, "resource": resource, "payload": request.payload}

        def authorize(workflow: Workflow) -> Decision:
            workflow.require_open()
            workflow.require_participant(agent)
            earlier = workflow.permissions.get(request.step_key)
            if earlier is not None:  # decided on an interrupted attempt of this step
                return Decision(
                    outcome=earlier["permission"], rule=earlier["rule"], reason="decided earlier"
                )
            decision = self.policy.decide(agent, request.tool, resource, workflow.rule_uses())
            workflow.request_action(
                agent, request.tool, resource, request.payload, request.step_key
            )
            workflow.decide_permission(
                agent,
                request.tool,
                resource,
                decision.outcome,
                decision.rule,
                decision.reason,
                request.step_key,
            )
            return decision

        decision = await self._command(request.workflow_id, authorize)
        if not decision.allowed:
            refuse = lambda wf: self._refuse_action(wf, agent, request.step_key, action, decision)  # noqa: E731
            return await self._step(agent, "execute", request.workflow_id, request.step_key, refuse)
        return await self._run_tool(
            agent,
            request.workflow_id,
            request.step_key,
            action,
            permission="allowed",
            rule=decision.rule,
        )

    def _refuse_action(
        self,
        workflow: Workflow,
        agent: str,
        step_key: str,
        action: dict[str, Any],
        decision: Decision,
    ) -> None:
        """A denied action is evidence and an escalation; one needing approval, an escalation."""
        if decision.outcome == "approval_required":
            workflow.raise_escalation(
                "approval_required", decision.reason, agent, step_key, action=action
            )
            raise Refusal(
                "approval_required",
                decision.reason,
                retry=RetryAdvice(strategy="escalate", attempt=1, max_attempts=1),
            )
        evidence = workflow.add_evidence(
            actor=agent,
            action=action["tool"],
            resource=action["resource"],
            permission="denied",
            rule=decision.rule,
            tool=action["tool"],
            status="denied",
        )
        advice = after_failure(
            workflow,
            self.policy,
            agent,
            "permission_denied",
            decision.reason,
            step_key,
            action=action,
        )
        raise Refusal(
            "permission_denied",
            f"{decision.reason} (rule {decision.rule}); evidence {evidence.audit_id}",
            [FieldError(field="evidenceId", message=evidence.audit_id)],
            retry=advice,
        )

    async def _invalid_payload(
        self, agent: str, request: ExecuteRequest, fields: list[FieldError]
    ) -> NoReturn:
        """Record an invalid payload as the step's reply, with the runtime's advice (repair?)."""
        detail = "; ".join(f"{f.field}: {f.message}" for f in fields)

        def refuse(workflow: Workflow) -> None:
            advice = after_failure(
                workflow, self.policy, agent, "invalid_tool_payload", detail, request.step_key
            )
            raise Refusal(
                "invalid_tool_payload",
                f"invalid {request.tool} payload: {detail}",
                fields,
                retry=advice,
            )

        await self._step(agent, "execute", request.workflow_id, request.step_key, refuse)
        raise AssertionError("unreachable: _step re-raises the refusal")

    async def _run_tool(
        self,
        agent: str,
        workflow_id: str,
        step_key: str,
        action: dict[str, Any],
        permission: str,
        rule: str,
    ) -> ExecuteReply:
        """Call the tool host, retrying timeouts and transient errors as the failure table says."""
        approved = permission == "approved"
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                with telemetry.span(
                    f"execute_tool {action['tool']}",
                    **{
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": action["tool"],
                        "gen_ai.agent.name": agent,
                        "claimcheck.attempt": attempt,
                        "claimcheck.permission": permission,
                    },
                ):
                    result = await self._call_tool(agent, workflow_id, step_key, action)
            except ToolUnavailable as unavailable:
                kind, detail, fields = unavailable.kind, str(unavailable), []
            else:
                if result.status == "succeeded" or (
                    result.status == "failed" and not result.transient
                ):
                    break
                kind = (
                    "invalid_tool_payload" if result.status == "invalid_payload" else "tool_error"
                )
                detail, fields = result.error or kind, result.fields
            advice = await self._command(
                workflow_id,
                lambda wf, k=kind, d=detail: after_failure(
                    wf, self.policy, agent, k, d, step_key, per_step=k != "invalid_tool_payload"
                ),
            )
            if advice.strategy == "retry":
                await asyncio.sleep(advice.delay_seconds)
                continue
            refusal = Refusal(
                kind,
                f"{action['tool']}: {detail}",
                fields or [FieldError(field="$", message=detail)],
                retry=advice,
            )
            await self._refuse_step(
                agent, "execute", workflow_id, step_key, refusal, require_open=False, redo=approved
            )
        duration_ms = (time.monotonic() - started) * 1000

        def record(workflow: Workflow) -> ExecuteReply:
            workflow.execute_tool(
                agent,
                action["tool"],
                result.status,
                duration_ms,
                attempt,
                self.policy.tool_cost(action["tool"]),
                step_key,
            )
            evidence = workflow.add_evidence(
                actor=agent,
                action=action["tool"],
                resource=action["resource"],
                permission=permission,
                rule=rule,
                tool=action["tool"],
                status=result.status,
                refs=result.refs,
            )
            output = result.output if result.status == "succeeded" else {"error": result.error}
            return ExecuteReply(evidence=evidence, output=output)

        # A human-approved action replaces the step's refusal, whatever the workflow's status.
        return await self._step(
            agent,
            "execute",
            workflow_id,
            step_key,
            record,
            require_open=not approved,
            redo=approved,
        )

    async def _call_tool(
        self, agent: str, workflow_id: str, step_key: str, action: dict[str, Any]
    ) -> ToolResult:
        """One call to a tool host, with the step's idempotency key."""
        call = ToolCall(
            idempotency_key=f"{workflow_id}/{step_key}",
            workflow_id=workflow_id,
            actor=agent,
            payload=action["payload"],
        )
        try:
            msg = await self.nc.request(
                self.subjects.tool(action["tool"]),
                encode(call),
                timeout=self.settings.tool_timeout,
                headers=telemetry.headers(),
            )
        except NatsTimeout:
            raise ToolUnavailable(
                "tool_timeout", f"no answer within {self.settings.tool_timeout}s"
            ) from None
        except NoRespondersError:
            raise ToolUnavailable("tool_error", f"no tool host serves {action['tool']}") from None
        return decode(msg.data, ToolResult)

    # -- model failures -------------------------------------------------------

    async def failure(self, agent: str, request: FailureRequest) -> RetryAdvice:
        """An agent's model produced output that failed validation or its verifier."""

        def change(workflow: Workflow) -> RetryAdvice:
            return after_failure(
                workflow, self.policy, agent, request.kind, request.detail, request.step_key
            )

        return await self._step(agent, "failure", request.workflow_id, request.step_key, change)

    # -- handoffs and claims --------------------------------------------------

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

        traceparent = INCOMING_TRACE.get()  # read here: change() runs in the ledger thread

        def change(workflow: Workflow) -> HandoffReply:
            workflow.send_handoff(fields, traceparent)
            return HandoffReply(handoff_id=handoff.handoff_id)

        return await self._step(agent, "handoff", request.workflow_id, request.step_key, change)

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
                reason = f"final claim is {claim.verdict}: {claim.reason}"
                workflow.classify_failure(agent, "unverified_claim", reason, request.step_key)
                workflow.raise_escalation(
                    "unverified_claim", reason, agent, request.step_key, claim_id=claim.claim_id
                )
            return SummaryReply(claim=claim, workflow_status=workflow.status)

        return await self._step(agent, "summarize", request.workflow_id, request.step_key, change)

    # -- humans ---------------------------------------------------------------

    async def resolve(self, agent: str, request: ResolveRequest) -> ResolveReply:
        """A human approves or denies an escalation; approval resumes the workflow."""
        if agent != OPERATOR:
            raise Refusal(
                "permission_denied", f"only the operator may resolve escalations, not {agent!r}"
            )
        escalation = await self._command(
            request.workflow_id,
            lambda wf: wf.resolve_escalation(
                request.escalation_id, request.decision, request.approver, request.reason
            ),
        )
        step_key, action = escalation["stepKey"], escalation["action"]
        if request.decision == "deny":
            why = request.reason or "no reason given"
            reason = f"{request.approver} denied {escalation['kind']}: {why}"
            await self._command(request.workflow_id, lambda wf: wf.fail(reason))
        elif escalation["claimId"]:
            await self._command(
                request.workflow_id,
                lambda wf: wf.complete(f"human:{request.approver}", escalation["claimId"]),
            )
        else:
            if action is not None:
                try:
                    await self._run_tool(
                        escalation["agent"],
                        request.workflow_id,
                        step_key,
                        action,
                        permission="approved",
                        rule=f"human:{request.approver}",
                    )
                except (
                    Refusal
                ) as refusal:  # recorded as the step's reply; the agent sees it on resume
                    log.warning("approved action failed: %s", refusal)
            else:
                await self._command(
                    request.workflow_id,
                    lambda wf: wf.complete_step(
                        step_key,
                        "resolve",
                        granted(wf.steps[step_key], self.policy, escalation["kind"]),
                    ),
                )
            await self._command(
                request.workflow_id,
                lambda wf: wf.resume(
                    wf.handoffs[handoff_of(step_key)],
                    request.escalation_id,
                    wf.traceparents.get(handoff_of(step_key), ""),
                ),
            )
        status = await self._read(request.workflow_id, lambda wf: wf.status)
        return ResolveReply(workflow_status=status)

    async def _require_artifact(self, artifact_id: str) -> None:
        try:
            await self.artifacts.get(artifact_id)
        except ArtifactError as error:
            raise Refusal("invalid_request", str(error)) from None
