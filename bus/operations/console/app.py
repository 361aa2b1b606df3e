"""The web console's ASGI app: workflows, their timelines, escalations, replay, live updates.

Built on FastAPI (Starlette) and Jinja templates, served by uvicorn: every page is
rendered on the server and is also a JSON endpoint under ``/api`` (documented at
``/openapi.json``). Viewing is read-only and open; approving or denying needs the
console token (``<state>/credentials/console.token`` or ``CLAIMCHECK_CONSOLE_TOKEN``)
and is sent as the operator over NATS, like ``claimcheck escalations approve``.
Forms carry a CSRF token (double submit, SameSite cookies, same-origin check).
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlparse

from fastapi import FastAPI, HTTPException, Request
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from bus.operations.console.data import ConsoleData
from bus.operations.console.live import Live
from bus.settings import Settings

T = TypeVar("T")
HERE = Path(__file__).parent
CSRF_COOKIE = "cc_csrf"
TOKEN_COOKIE = "cc_token"
NAME_COOKIE = "cc_operator"


def console_token(settings: Settings) -> str:
    """The secret that lets a person approve: from the environment, else a file of mode 0600
    under the state directory's credentials (made on first use), beside the NATS ones."""
    if token := os.environ.get("CLAIMCHECK_CONSOLE_TOKEN"):
        return token
    path = settings.state_dir / "credentials" / "console.token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


class Console:
    """What the routes share: the data, the live link, the token and the templates."""

    def __init__(self, settings: Settings, token: str | None = None) -> None:
        self.settings = settings
        self.token = token or console_token(settings)
        self.live = Live(settings)
        self.data: ConsoleData | None = None
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.filters["pageq"] = lambda query, page: urlencode(
            {**dict(query), "page": page}
        )

    @property
    def store(self) -> ConsoleData:
        assert self.data is not None, "the console's ledger is opened at start-up"
        return self.data

    def token_ok(self, offered: str | None) -> bool:
        return bool(offered) and hmac.compare_digest(str(offered), self.token)

    async def read(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Ledger and view reads are blocking database calls: off the event loop."""
        return await run_in_threadpool(function, *args, **kwargs)


def check_csrf(request: Request, form: dict[str, str]) -> None:
    """Double submit: the form's token must equal the cookie's, and a browser's Origin (or
    Referer) must be this console, so another site cannot post on a logged-in operator's
    behalf."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie, form.get("csrf", "")):
        raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page")
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin and urlparse(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, f"cross-site request from {origin} refused")


def create_app(settings: Settings, token: str | None = None) -> FastAPI:
    """The console for the deployment ``settings`` name."""
    from bus.operations.console import api, views

    console = Console(settings, token)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        console.data = await run_in_threadpool(ConsoleData, settings)
        await console.live.start()
        try:
            yield
        finally:
            await console.live.stop()
            await run_in_threadpool(console.store.close)

    app = FastAPI(
        title="claimcheck console",
        version="1",
        description="Workflows, their evidence and claims, escalations and replay: the JSON "
        "behind every page of the console.",
        lifespan=lifespan,
        docs_url=None,  # the Swagger page loads scripts from a CDN; /openapi.json is local
        redoc_url=None,
    )
    app.state.console = console
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(api.router)
    app.include_router(views.router)
    return app
