"""The console's JSON endpoints (one per page), the live event feed and the approval call.

Every HTML page has its data here, under ``/api``, described in ``/openapi.json``.
Approvals over the API take the console token as ``Authorization: Bearer``; they
use no cookie, so cross-site forms cannot reach them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from bus.operations.console.data import NoWorkflow

if TYPE_CHECKING:
    from bus.operations.console.app import Console

router = APIRouter(prefix="/api", tags=["console"])
HEARTBEAT_SECONDS = 15.0


def console_of(request: Request) -> Console:
    return request.app.state.console  # type: ignore[no-any-return]


class ListFilters(BaseModel):
    status: str | None = Field(None, description="running, escalated, completed, failed, stopped")
    agent: str | None = Field(None, description="the agent the workflow is with now")
    verdict: str | None = Field(
        None, description="flagged, unverified, contradicted, denied or escalated"
    )
    since: str | None = Field(None, description="started at or after (ISO 8601)")
    until: str | None = Field(None, description="started before (ISO 8601)")
    search: str | None = Field(None, description="a workflow id or its beginning")
    page: int = Field(1, ge=1)
    size: int = Field(50, ge=1, le=500)


async def list_page(request: Request, filters: ListFilters) -> dict[str, Any]:
    console = console_of(request)
    try:
        found = await console.read(
            console.store.workflows,
            status=filters.status or None,
            agent=filters.agent or None,
            verdict=filters.verdict or None,
            since=filters.since or None,
            until=filters.until or None,
            search=filters.search or None,
            limit=filters.size,
            offset=(filters.page - 1) * filters.size,
        )
    except ValueError as error:
        raise HTTPException(400, str(error)) from None
    return {**found, "page": filters.page, "size": filters.size, **stack_state(console)}


def stack_state(console: Console) -> dict[str, Any]:
    return {"stackUp": console.live.connected, "stackDown": console.live.why_down}


@router.get("/workflows", summary="Workflows, newest first, filtered and paged")
async def workflows(request: Request, filters: Annotated[ListFilters, Query()]) -> dict[str, Any]:
    return await list_page(request, filters)


async def workflow_page(request: Request, workflow_id: str) -> dict[str, Any]:
    console = console_of(request)
    try:
        found = await console.read(console.store.workflow, workflow_id)
    except NoWorkflow:
        raise HTTPException(404, f"no workflow {workflow_id!r}") from None
    return {**found, **stack_state(console)}


@router.get("/workflows/{workflow_id}", summary="One workflow: timeline, chain, claims")
async def workflow(request: Request, workflow_id: str) -> dict[str, Any]:
    return await workflow_page(request, workflow_id)


async def replay_state(request: Request, workflow_id: str, until: int | None) -> dict[str, Any]:
    console = console_of(request)
    try:
        return await console.read(console.store.replay, workflow_id, until)
    except NoWorkflow:
        raise HTTPException(404, f"no workflow {workflow_id!r}") from None
    except ValueError as error:
        raise HTTPException(400, str(error)) from None


@router.get("/workflows/{workflow_id}/replay", summary="The state after event N (time travel)")
async def replay(
    request: Request, workflow_id: str, until: Annotated[int | None, Query(ge=1)] = None
) -> dict[str, Any]:
    return await replay_state(request, workflow_id, until)


@router.get("/escalations", summary="Open escalations")
async def escalations(request: Request) -> dict[str, Any]:
    console = console_of(request)
    return {"escalations": await console.read(console.store.escalations), **stack_state(console)}


class Answer(BaseModel):
    approver: str = Field(min_length=1, description="who decides, recorded with the decision")
    reason: str = ""


async def resolve_escalation(
    console: Console, escalation_id: str, decision: str, approver: str, reason: str
) -> dict[str, Any]:
    """Send the human's answer as the operator, exactly like ``claimcheck escalations``."""
    from bus.operations.operators import OperatorError, resolve

    nc = console.live.nc
    if nc is None or not console.live.connected:
        raise HTTPException(
            503,
            f"approvals need the running stack ({console.live.why_down}): start it with "
            f"`claimcheck up --state-dir {console.settings.state_dir}`",
        )
    try:
        return await resolve(nc, console.live.subjects, escalation_id, decision, approver, reason)
    except OperatorError as error:
        raise HTTPException(409, str(error)) from None


@router.post("/escalations/{escalation_id}/{decision}", summary="Approve or deny an escalation")
async def answer(
    request: Request,
    escalation_id: str,
    decision: Literal["approve", "deny"],
    body: Answer,
    authorization: str = Header("", description="Bearer <console token>"),
) -> dict[str, Any]:
    console = console_of(request)
    if not console.token_ok(authorization.removeprefix("Bearer ").strip()):
        raise HTTPException(401, "approving needs the console token (Authorization: Bearer)")
    return await resolve_escalation(console, escalation_id, decision, body.approver, body.reason)


@router.get("/artifacts/{artifact_id}", summary="A handoff's artifact, read through the runtime")
async def artifact(request: Request, artifact_id: str) -> dict[str, Any]:
    from bus.operations.operators import read_artifact

    console = console_of(request)
    if console.live.nc is None or not console.live.connected:
        raise HTTPException(503, "artifacts are in the stack's object store: the stack is down")
    try:
        data = await read_artifact(console.live.nc, console.live.subjects, artifact_id)
    except Exception as error:
        raise HTTPException(404, f"no artifact {artifact_id!r}: {error}") from None
    try:
        return {"artifactId": artifact_id, "json": json.loads(data)}
    except ValueError:
        return {"artifactId": artifact_id, "text": data.decode("utf-8", "replace")}


@router.get("/live", summary="Server-sent events: one per event the ledger publishes")
async def live(request: Request) -> StreamingResponse:
    console = console_of(request)
    queue = console.live.listen()

    async def stream() -> AsyncIterator[str]:
        try:
            yield f"event: hello\ndata: {json.dumps(stack_state(console))}\n\n"
            while not console.live.closing:
                try:
                    update = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    yield ": still here\n\n"
                    continue
                if not update:  # the server is stopping
                    return
                yield f"data: {json.dumps(update)}\n\n"
        finally:
            console.live.forget(queue)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )
