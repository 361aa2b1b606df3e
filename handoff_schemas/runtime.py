"""Requests agents send to the runtime, and the runtime's replies.

An agent asks the runtime on ``<prefix>.rt.<agent>.<op>``; the ``<agent>`` token
is the caller's identity (NATS permissions pin it), so no request carries an
``actor`` field a model could forge. Every request that changes a workflow
carries a ``stepKey`` that is deterministic for the handoff being handled: a
repeated key returns the recorded reply instead of acting twice.

Every reply is a :class:`Reply`: ``ok`` with a ``result``, or an ``error`` with a
code, a message and field-level errors. Never a stack trace.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from handoff_schemas.base import WireStruct
from handoff_schemas.controls import CONTROLS, ControlReply
from handoff_schemas.limits import (
    MAX_ARTIFACT_BYTES,
    MAX_BUDGET_USD,
    MAX_ITEMS,
    Fields,
    Id,
    Label,
    Resource,
    Text,
    Tokens,
)
from handoff_schemas.messages import (
    ArtifactId,
    Claim,
    ClaimAssertion,
    ClaimItem,
    Evidence,
    HandoffStatus,
    Name,
    PermissionOutcome,
)

StepKey = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]

ErrorCode = Literal[
    "invalid_request",
    "unknown_operation",
    "unknown_workflow",
    "workflow_closed",
    "unknown_task",
    "invalid_handoff",
    "permission_denied",
    "approval_required",
    "escalated",
    "invalid_tool_payload",
    "bad_reasoning",
    "tool_error",
    "tool_timeout",
    "cost_budget_exceeded",
    "internal",
    "unavailable",  # NATS did not answer the runtime (a leader election): ask again
    "cancelled",  # an operator cancelled the workflow: stop
    "terminated",  # an operator terminated the workflow: stop
    "unknown_escalation",
    "waiting",  # the handling waits for a signal; its handoff comes again with one
]


class FieldError(WireStruct):
    field: str
    message: str


class RetryAdvice(WireStruct):
    """The runtime's decision after a failure: what the agent may do next.

    ``repair`` and ``replan`` mean: ask the model again (the budget covers it);
    ``escalate`` means a human now holds the workflow; ``stop`` and ``fail``
    mean the workflow or step is over.
    """

    strategy: Literal["retry", "repair", "replan", "escalate", "stop", "fail"]
    attempt: int
    max_attempts: int
    delay_seconds: float = 0.0


class ErrorInfo(WireStruct):
    code: ErrorCode
    message: str
    fields: list[FieldError] = []
    retry: RetryAdvice | None = None


class Reply(WireStruct):
    """The envelope of every reply on the bus."""

    ok: bool
    result: Any = None
    error: ErrorInfo | None = None


class Usage(WireStruct):
    """Tokens a model call used: never negative, so a call never refunds a budget."""

    input_tokens: Tokens = 0
    output_tokens: Tokens = 0
    cache_read_tokens: Tokens = 0
    cache_write_tokens: Tokens = 0


# -- requests -----------------------------------------------------------------


class StartRequest(WireStruct):
    """A user request entering the system: the first handoff of a workflow."""

    task: Name
    to: Name
    artifact_id: ArtifactId
    scope: Label = "default"
    budget_usd: Annotated[float, msgspec.Meta(ge=0, le=MAX_BUDGET_USD)] | None = None
    request_id: Annotated[str, msgspec.Meta(max_length=200)] = ""
    """The client's id for this start: asked again, it starts nothing new (retries are safe)."""


STATE_PAGE = 100
"""Steps, and checkpoints, a ``state`` reply holds when the caller names no ``limit``."""
MAX_STATE_PAGE = 1000
StateCursor = Annotated[str, msgspec.Meta(pattern=r"^([0-9]{1,9}\.[0-9]{1,9})?$")]
"""Where a ``state`` page continues: opaque to callers, who pass back ``nextCursor``."""


class StateRequest(WireStruct):
    """A workflow's recorded steps and checkpoints (operation ``state``), a page at a time.

    Both grow with the workflow's history, so a reply holds at most ``limit`` steps and
    ``limit`` checkpoints; ``nextCursor`` in the reply, passed back as ``cursor``, asks for
    the next page (a caller that passes none gets the first). ``stepPrefix`` keeps only the
    step keys that start with it: an agent resuming a handling asks for ``<handoffId>/``,
    the only steps it replays.
    """

    workflow_id: Id
    step_prefix: Annotated[str, msgspec.Meta(max_length=200)] = ""
    cursor: StateCursor = ""
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_STATE_PAGE)] = STATE_PAGE


class ArtifactPutRequest(WireStruct):
    """Store bytes as an artifact (operation ``artifact_put``); the reply names its id.

    Agents have no rights on the object store: they store and read artifacts through the
    runtime. ``workflowId`` names the workflow the caller takes part in; only the operator,
    storing a new workflow's input before starting it, names none. ``data`` is base64 in
    JSON, at most :data:`~handoff_schemas.limits.MAX_ARTIFACT_BYTES` once decoded.
    """

    data: Annotated[bytes, msgspec.Meta(max_length=MAX_ARTIFACT_BYTES)]
    workflow_id: Id | None = None


class ArtifactGetRequest(WireStruct):
    """Read an artifact (operation ``artifact_get``): one of ``workflowId``'s, which the
    caller takes part in (a handoff's input, a tool call's evidence). Only the operator
    may name no workflow."""

    artifact_id: ArtifactId
    workflow_id: Id | None = None


class StepRequest(WireStruct):
    """Fields common to every request that changes a workflow."""

    workflow_id: Id
    step_key: StepKey


class IntentRequest(StepRequest):
    handoff_id: Id
    task: Label
    known_tasks: Annotated[list[Label], msgspec.Meta(max_length=MAX_ITEMS)]


class BeginRequest(WireStruct):
    """``intent`` (step ``<handoffId>/1``), ``artifact_get`` and ``context`` (step 2) in one
    request and one commit (operation ``begin``); asked again, it replays both steps."""

    workflow_id: Id
    handoff_id: Id
    task: Label
    known_tasks: Annotated[list[Label], msgspec.Meta(max_length=MAX_ITEMS)]
    artifact_id: ArtifactId


class ArtifactDigest(WireStruct):
    artifact_id: ArtifactId
    size: Annotated[int, msgspec.Meta(ge=0)]


class ContextRequest(StepRequest):
    artifacts: Annotated[list[ArtifactDigest], msgspec.Meta(max_length=MAX_ITEMS)]


StopReason = Annotated[str, msgspec.Meta(max_length=64)]
"""Why the model stopped, as its provider said (``tool_use``, ``max_tokens``, ``refusal``)."""


class ReasoningRequest(StepRequest):
    """One model call's answer: ``model`` as the provider named it (dated names are priced
    by family), its ``usage`` (cache reads and writes included) and why it stopped."""

    purpose: Label
    model: Label
    output: Fields
    usage: Usage = msgspec.field(default_factory=Usage)
    stop_reason: StopReason = "tool_use"


class PermitRequest(StepRequest):
    action: Name
    resource: Resource


class DeniedActionRequest(StepRequest):
    action: Name
    resource: Resource
    reason: Text


class ExecuteRequest(StepRequest):
    """Run a tool. The resource the policy checks is derived from ``payload``."""

    tool: Name
    payload: Fields


class CheckpointRequest(StepRequest):
    """A named point the agent declares; ``evidenceIds`` are the records it says back it.

    The runtime records which of them really do (this workflow's, the agent's own or a
    verified delegate's, succeeded, the latest of their step); a checkpoint none backs is
    shown as the agent's word only.
    """

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    data: Fields = {}
    evidence_ids: Annotated[list[Id], msgspec.Meta(max_length=MAX_ITEMS)] = []


class AuditRequest(StepRequest):
    note: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    data: Fields = {}


class HandoffRequest(StepRequest):
    to: Name
    task: Name
    artifact_id: ArtifactId
    status: HandoffStatus
    scope: Label
    evidence_id: Id | None = None
    items: Annotated[list[ClaimItem], msgspec.Meta(max_length=MAX_ITEMS)] = []
    """For ``completed`` and ``verified``: the claim items the status rests on; the runtime
    verifies them as a claim and refuses the handoff unless that claim is verified."""


class FailureRequest(StepRequest):
    """The agent reports a failure of its model or its output; the runtime decides what next.

    ``model_unavailable`` (transient, with the provider's ``retry_after_seconds`` when it
    sent one) and ``model_error`` (permanent) are failed model attempts;
    ``model_truncated`` is an answer cut off at its token limit (``stopReason``
    ``max_tokens``), ``model_refused`` a model that declined (``refusal``).
    """

    kind: Literal[
        "invalid_tool_payload",
        "bad_reasoning",
        "model_unavailable",
        "model_error",
        "model_truncated",
        "model_refused",
    ]
    detail: Text
    retry_after_seconds: Annotated[float, msgspec.Meta(ge=0, le=3600)] | None = None


class FaultReport(StepRequest):
    """An agent could not handle a handoff: what went wrong, for the ledger (not a log file).

    ``handler_exception``: the handler raised; ``undecodable_input``: the input it was
    handed does not decode (not JSON, not UTF-8); ``invalid_payload``: the input decodes but
    fails the handler's validation. ``trace`` is the end of the stack trace (bounded: the
    agent keeps its last lines), ``delivery`` which delivery of the handoff failed.
    """

    kind: Literal["handler_exception", "undecodable_input", "invalid_payload"]
    handoff_id: Id
    error_type: Label
    message: Text
    trace: Text = ""
    delivery: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1


class AwaitSignalRequest(StepRequest):
    """``ctx.wait_for_signal(name)``: the next unread signal of that name an operator sent."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class SignalReply(WireStruct):
    name: str
    data: dict[str, Any]
    signal_id: str


class ResolveRequest(WireStruct):
    """A human's answer to an escalation (only the operator identity may send it).

    ``corrections`` approve with changes: fields of the held action's payload replaced
    (``{"to": "legal@acme.example"}``); the corrected action must pass the policy itself.
    """

    workflow_id: Id
    escalation_id: Id
    decision: Literal["approve", "deny"]
    approver: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    reason: Text = ""
    corrections: Fields = {}


class ConfirmRequest(WireStruct):
    """Ask the tools' own systems whether a workflow's recorded side effects exist as recorded
    (``claimcheck verify --external``; only the operator identity may send it)."""

    workflow_id: Id


class ExternalCheck(WireStruct):
    """What a tool's own system says of one recorded side effect.

    ``confirmed``: it exists as recorded. ``contradicted``: it is missing, or differs
    (``problems`` says how). ``unconfirmable``: the tool cannot ask its system (``problems``
    says why); such evidence is not confirmed either.
    """

    evidence_id: str
    workflow_id: str
    tool: str
    outcome: Literal["confirmed", "contradicted", "unconfirmable"]
    checked_at: str
    problems: list[str] = []


class ConfirmReply(WireStruct):
    checks: list[ExternalCheck]


class SummarizeRequest(StepRequest):
    """The agent's final summary: a claim the runtime verifies before completing."""

    summary: Text
    claim: ClaimAssertion


# -- replies ------------------------------------------------------------------


class StartReply(WireStruct):
    workflow_id: str
    handoff_id: str


class StepsReply(WireStruct):
    """What a workflow already did, so a re-delivered handler can skip it: one page of it
    (:class:`StateRequest`); ``nextCursor`` is None on the last page."""

    workflow_id: str
    status: str
    steps: dict[str, Any]
    checkpoints: dict[str, Any]
    next_cursor: str | None = None


class Ack(WireStruct):
    step_key: str


class ReasoningReply(WireStruct):
    """The recorded model output: what a re-run handler gets instead of a new model call."""

    step_key: str
    output: dict[str, Any]
    stop_reason: str = "tool_use"


class IntentReply(WireStruct):
    task: str


class BeginReply(WireStruct):
    """The handoff's artifact (base64) and the first page of what the handling recorded
    before (``state`` with ``stepPrefix`` ``<handoffId>/`` gives the next pages)."""

    data: bytes
    state: StepsReply


class PermitReply(WireStruct):
    permission: PermissionOutcome
    rule: str
    reason: str


class EvidenceReply(WireStruct):
    evidence: Evidence


class ExecuteReply(WireStruct):
    evidence: Evidence
    output: dict[str, Any]


class ArtifactPutReply(WireStruct):
    artifact_id: str
    size: int


class ArtifactReply(WireStruct):
    """An artifact's bytes (base64 in JSON), checked against its digest by the runtime."""

    artifact_id: str
    data: bytes


class ResolveReply(WireStruct):
    workflow_status: str


class HandoffReply(WireStruct):
    handoff_id: str


class SummaryReply(WireStruct):
    claim: Claim
    workflow_status: str


OPERATIONS: dict[str, type[WireStruct]] = {
    "start": StartRequest,
    "state": StateRequest,
    "begin": BeginRequest,
    "intent": IntentRequest,
    "context": ContextRequest,
    "reasoning": ReasoningRequest,
    "permit": PermitRequest,
    "denied": DeniedActionRequest,
    "execute": ExecuteRequest,
    "checkpoint": CheckpointRequest,
    "audit": AuditRequest,
    "handoff": HandoffRequest,
    "summarize": SummarizeRequest,
    "failure": FailureRequest,
    "fault": FaultReport,
    "wait": AwaitSignalRequest,
    "resolve": ResolveRequest,
    "confirm": ConfirmRequest,
    "artifact_put": ArtifactPutRequest,
    "artifact_get": ArtifactGetRequest,
    **CONTROLS,
}
"""Operation name (the last subject token) to the request type it takes."""

REPLIES: dict[str, type[WireStruct]] = {
    "start": StartReply,
    "state": StepsReply,
    "begin": BeginReply,
    "intent": IntentReply,
    "context": Ack,
    "reasoning": ReasoningReply,
    "permit": PermitReply,
    "denied": EvidenceReply,
    "execute": ExecuteReply,
    "checkpoint": Ack,
    "audit": Ack,
    "handoff": HandoffReply,
    "summarize": SummaryReply,
    "failure": RetryAdvice,
    "fault": RetryAdvice,
    "wait": SignalReply,
    "resolve": ResolveReply,
    "confirm": ConfirmReply,
    "artifact_put": ArtifactPutReply,
    "artifact_get": ArtifactReply,
    **dict.fromkeys(CONTROLS, ControlReply),
}
"""Operation name to the type of ``result`` in its :class:`Reply` when ``ok``."""
