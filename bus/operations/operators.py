"""What people and scripts outside the agents do: submit work, watch it, answer escalations.

They act as the operator identity (``<prefix>.rt.cli.<op>``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar
from uuid import uuid4

from nats.aio.client import Client
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from bus import telemetry
from bus.transport.retry import UNAVAILABLE, Unavailable, request_while_working, retrying
from bus.transport.subjects import OPERATOR, Subjects
from handoff_schemas import (
    ArtifactGetRequest,
    ArtifactPutReply,
    ArtifactPutRequest,
    ArtifactReply,
    ControlReply,
    ControlRequest,
    EventEnvelope,
    Reply,
    ResolveReply,
    ResolveRequest,
    SchemaError,
    StartReply,
    StartRequest,
    StateRequest,
    StepsReply,
    WireStruct,
    convert,
    decode,
    encode,
)
from projections import EscalationsView, WorkflowView

T = TypeVar("T")
log = logging.getLogger(__name__)


class OperatorError(Exception):
    """The runtime refused the operator's request; the message says why."""


async def ask_runtime(
    nc: Client,
    subjects: Subjects,
    op: str,
    request: WireStruct,
    into: type[T],
    timeout: float = 30.0,
) -> T:
    """Ask the runtime, again while no replica answers (every operator request is safe to
    repeat: a start carries its request id, a repeated resolve is recognised).

    A replica that went silent (killed with the request in hand) is given up after a few
    seconds; one that says it is still working is waited for.
    """

    async def attempt() -> Reply:
        msg = await request_while_working(
            nc, subjects.runtime(OPERATOR, op), encode(request), timeout, telemetry.headers()
        )
        reply = decode(msg.data, Reply)
        if reply.error is not None and reply.error.code == UNAVAILABLE:
            raise Unavailable(reply.error.message)
        return reply

    reply = await retrying(attempt, timeout, f"{op} request")
    if not reply.ok:
        assert reply.error is not None
        raise OperatorError(f"{reply.error.code}: {reply.error.message}")
    return convert(reply.result, into)


async def submit(
    nc: Client,
    subjects: Subjects,
    task: str,
    to: str,
    data: bytes,
    scope: str = "default",
    budget_usd: float | None = None,
) -> StartReply:
    """Store the input as an artifact and start a workflow that hands it to ``to``.

    Both through the runtime: the operator has no rights on the object store either.
    """
    artifact_id = await store_artifact(nc, subjects, data)
    request = StartRequest(
        task=task,
        to=to,
        artifact_id=artifact_id,
        scope=scope,
        budget_usd=budget_usd,
        request_id=uuid4().hex,  # the same for every retry: one submit, one workflow
    )
    return await ask_runtime(nc, subjects, "start", request, StartReply)


async def store_artifact(nc: Client, subjects: Subjects, data: bytes) -> str:
    """Store ``data`` as an artifact through the runtime; return its id."""
    request = ArtifactPutRequest(data=data)
    return (await ask_runtime(nc, subjects, "artifact_put", request, ArtifactPutReply)).artifact_id


async def read_artifact(nc: Client, subjects: Subjects, artifact_id: str) -> bytes:
    """Any artifact, read through the runtime (the operator may read every workflow's)."""
    request = ArtifactGetRequest(artifact_id=artifact_id)
    return (await ask_runtime(nc, subjects, "artifact_get", request, ArtifactReply)).data


def read_event(data: bytes) -> EventEnvelope | None:
    """One message of a stream the relay writes, or None (logged) when it is not an event."""
    try:
        return decode(data, EventEnvelope)
    except SchemaError as error:
        log.warning("skipped an unreadable message: %s", error)
        return None


async def watch(
    nc: Client,
    subjects: Subjects,
    workflow_id: str,
    timeout: float = 60.0,
    until: Callable[[WorkflowView], bool] = lambda view: view.settled,
) -> WorkflowView:
    """Follow a workflow on the events stream until ``until`` holds or ``timeout`` passes."""
    view = WorkflowView(workflow_id)
    # Creating the consumer is a JetStream API call: asked again while the cluster elects.
    subscription = await retrying(
        lambda: nc.jetstream().subscribe(
            subjects.event(workflow_id, ">"),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        ),
        timeout,
        "watch",
    )
    try:
        async with asyncio.timeout(timeout):
            while not until(view):
                msg = await subscription.next_msg(timeout=None)
                if (event := read_event(msg.data)) is not None:
                    view.apply(event)
    except TimeoutError:
        pass  # the caller sees that ``until`` does not hold
    finally:
        await subscription.unsubscribe()
    return view


async def escalations(nc: Client, subjects: Subjects) -> EscalationsView:
    """Every escalation so far, read from the escalation stream."""
    view = EscalationsView()
    js = nc.jetstream()
    try:
        pending = (await js.stream_info(subjects.stream("escalation"))).state.messages
    except NotFoundError:
        return view
    subscription = await js.subscribe(
        f"{subjects.prefix}.escalation.>", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    try:
        for _ in range(pending):
            if (event := read_event((await subscription.next_msg(timeout=5)).data)) is not None:
                view.apply(event)
    finally:
        await subscription.unsubscribe()
    return view


async def find_escalation(
    nc: Client, subjects: Subjects, escalation_id: str, patience: float = 3.0
) -> dict[str, Any]:
    """An escalation from the stream, waiting briefly: the relay publishes it just after the
    ledger records it, so one seen in a workflow's events may not be on the stream yet."""
    deadline = asyncio.get_running_loop().time() + patience
    while (escalation := (await escalations(nc, subjects)).get(escalation_id)) is None:
        if asyncio.get_running_loop().time() > deadline:
            raise OperatorError(f"no escalation {escalation_id!r}")
        await asyncio.sleep(0.1)
    return escalation


async def control(nc: Client, subjects: Subjects, op: str, request: ControlRequest) -> ControlReply:
    """Cancel, terminate, retry, reset or signal a workflow (``op``); the runtime records it."""
    return await ask_runtime(nc, subjects, op, request, ControlReply)


async def resolve(
    nc: Client,
    subjects: Subjects,
    escalation_id: str,
    decision: str,
    approver: str,
    reason: str = "",
    corrections: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Approve (with ``corrections`` to the held action's payload, if any) or deny an open
    escalation; return it with the workflow's new status."""
    escalation = await find_escalation(nc, subjects, escalation_id)
    if escalation["resolution"] is not None:
        raise OperatorError(
            f"escalation {escalation_id} was already resolved: "
            f"{escalation['resolution']['decision']}"
        )
    request = ResolveRequest(
        workflow_id=escalation["workflowId"],
        escalation_id=escalation_id,
        decision=decision,
        approver=approver,
        reason=reason,
        corrections=corrections or {},
    )
    try:
        reply = await ask_runtime(nc, subjects, "resolve", request, ResolveReply)
    except OperatorError:
        # Asked again after the first attempt's answer was lost: this very answer is recorded.
        now = await find_escalation(nc, subjects, escalation_id)
        done = now["resolution"] or {}
        if (done.get("decision"), done.get("approver")) != (decision, approver):
            raise
        state = await ask_runtime(
            nc, subjects, "state", StateRequest(workflow_id=escalation["workflowId"]), StepsReply
        )
        return {**now, "workflowStatus": state.status}
    return {**escalation, "workflowStatus": reply.workflow_status}
