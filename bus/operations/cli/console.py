"""``claimcheck ui``: the web console for the deployment the settings name."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from bus.operations.cli.common import StateDir, app, console, fail, run, settings_for
from bus.settings import Settings

UiPort = Annotated[int, typer.Option("--port", help="The console's port.")]


def announce(settings: Settings, url: str) -> None:
    """Where the console is, where its token is, and whether it can approve yet."""
    from bus.operations.console.app import console_token
    from bus.operations.stack import StateLock

    console_token(settings)  # made now, so the operator can read it before the first visit
    where = (
        "CLAIMCHECK_CONSOLE_TOKEN"
        if os.environ.get("CLAIMCHECK_CONSOLE_TOKEN")
        else str(settings.state_dir / "credentials" / "console.token")
    )
    console.print(f"claimcheck console at {url}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"approving there needs the console token in {where}", markup=False, soft_wrap=True
    )
    if not settings.nats_url and StateLock(settings.state_dir).holder() is None:
        console.print(
            "the stack is down: the console serves the ledger read-only, and approvals need "
            f"the stack (`claimcheck up --state-dir {settings.state_dir}`)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def ui(
    state_dir: StateDir = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: UiPort = 8280,
) -> None:
    """Serve the web console: workflows, traces, escalations, replay, live updates."""
    from bus.operations.console.server import (
        console_server,
        listening_socket,
        serve_console,
        url_of,
    )
    from bus.operations.services import serve_until_stopped

    settings = settings_for(state_dir)
    try:
        sock = listening_socket(host, port)
    except OSError as error:
        raise fail(f"the console cannot listen on {host}:{port}: {error}") from None
    server = console_server(settings, host, sock.getsockname()[1], embedded=True)
    announce(settings, url_of(host, sock.getsockname()[1]))
    run(serve_until_stopped(lambda stop: serve_console(server, sock, stop)))
