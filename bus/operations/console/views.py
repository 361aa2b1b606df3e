"""The console's HTML pages: the workflow list, one workflow, escalations, and the forms.

Each page renders the same data as its ``/api`` twin. A request with the header
``X-Fragment: 1`` gets only the page's live part, which the page's script fetches
again when the live feed says something changed, so nothing reloads.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bus.operations.console.api import (
    ListFilters,
    console_of,
    list_page,
    replay_state,
    resolve_escalation,
    stack_state,
    workflow_page,
)
from bus.operations.console.app import CSRF_COOKIE, NAME_COOKIE, TOKEN_COOKIE, check_csrf

router = APIRouter(include_in_schema=False)


def render(request: Request, template: str, context: dict[str, Any]) -> HTMLResponse:
    console = console_of(request)
    csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
    response = console.templates.TemplateResponse(
        request,
        template,
        {
            **context,
            **stack_state(console),
            "fragment": request.headers.get("x-fragment") == "1",
            "csrf": csrf,
            "operator": request.cookies.get(NAME_COOKIE)
            if console.token_ok(request.cookies.get(TOKEN_COOKIE))
            else None,
            "note": request.query_params.get("note", ""),
            "state_dir": str(console.settings.state_dir),
        },
    )
    response.headers["Cache-Control"] = "no-store"
    if CSRF_COOKIE not in request.cookies:
        response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict")
    return response


async def form_of(request: Request) -> dict[str, str]:
    """An urlencoded form (no multipart parser needed for these few fields)."""
    fields = parse_qs((await request.body()).decode(), keep_blank_values=True)
    return {key: values[-1] for key, values in fields.items()}


def back(to: str, note: str) -> RedirectResponse:
    separator = "&" if "?" in to else "?"
    return RedirectResponse(f"{to}{separator}note={quote(note)}", status_code=303)


def safe_next(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") else "/"


@router.get("/", response_class=HTMLResponse)
async def workflow_list(request: Request, filters: Annotated[ListFilters, Query()]) -> Response:
    found = await list_page(request, filters)
    pages = max(1, -(-found["total"] // filters.size))
    return render(request, "list.html", {**found, "filters": filters, "pages": pages})


@router.get("/workflows/{workflow_id}", response_class=HTMLResponse)
async def one_workflow(
    request: Request, workflow_id: str, until: Annotated[int | None, Query(ge=1)] = None
) -> Response:
    found = await workflow_page(request, workflow_id)
    replayed = None
    if until is not None:
        try:
            replayed = await replay_state(request, workflow_id, until)
        except HTTPException as error:
            replayed = {"error": error.detail}
    return render(request, "workflow.html", {"wf": found, "replayed": replayed, "until": until})


@router.get("/escalations", response_class=HTMLResponse)
async def escalation_list(request: Request) -> Response:
    console = console_of(request)
    found = await console.read(console.store.escalations)
    return render(request, "escalations.html", {"escalations": found})


@router.post("/login")
async def login(request: Request) -> Response:
    form = await form_of(request)
    check_csrf(request, form)
    console = console_of(request)
    target = safe_next(form.get("next", "/"))
    name = form.get("name", "").strip()
    if not name or not console.token_ok(form.get("token", "")):
        return back(target, "wrong token, or no name: approvals stay locked")
    response = back(target, f"signed in as {name}: you can approve and deny")
    for key, value in ((TOKEN_COOKIE, form["token"]), (NAME_COOKIE, name)):
        response.set_cookie(key, value, httponly=True, samesite="strict")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await form_of(request)
    check_csrf(request, form)
    response = back(safe_next(form.get("next", "/")), "signed out")
    response.delete_cookie(TOKEN_COOKIE)
    response.delete_cookie(NAME_COOKIE)
    return response


@router.post("/escalations/{escalation_id}/{decision}")
async def answer(request: Request, escalation_id: str, decision: str) -> Response:
    form = await form_of(request)
    check_csrf(request, form)
    console = console_of(request)
    if decision not in ("approve", "deny"):
        raise HTTPException(404, f"no decision {decision!r}")
    if not console.token_ok(request.cookies.get(TOKEN_COOKIE)):
        raise HTTPException(401, "approving needs the console token: sign in first")
    target = safe_next(form.get("next", "/escalations"))
    try:
        resolved = await resolve_escalation(
            console,
            escalation_id,
            decision,
            request.cookies.get(NAME_COOKIE, "console"),
            form.get("reason", ""),
        )
    except HTTPException as error:
        return back(target, str(error.detail))
    past = {"approve": "approved", "deny": "denied"}[decision]
    return back(target, f"{past} {escalation_id}: workflow {resolved['workflowStatus']}")
