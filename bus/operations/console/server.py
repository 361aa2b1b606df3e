"""Serving the console with uvicorn, alone (``claimcheck ui``) or inside ``claimcheck up``.

Inside ``up`` the stack owns the signals: the server must not install its own
handlers (uvicorn would take SIGTERM from the stack), so it is stopped by flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn

from bus.operations.console.app import create_app
from bus.settings import Settings

DEFAULT_PORT = 8280


class ConsoleServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to whoever runs it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def console_server(
    settings: Settings, host: str = "127.0.0.1", port: int = DEFAULT_PORT, embedded: bool = False
) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=3,  # a browser's live stream must not hold a stop up
    )
    return ConsoleServer(config) if embedded else uvicorn.Server(config)


def stop_server(server: uvicorn.Server) -> None:
    """End the browsers' live streams (they never end by themselves), then the server."""
    server.config.app.state.console.live.close_streams()
    server.should_exit = True


async def serve_console(server: uvicorn.Server, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set (the caller owns the signals), then stop cleanly."""
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    stop_server(server)
    await serving


def listening_socket(host: str, port: int) -> socket.socket:
    """Bound here, not by uvicorn: a taken port is then an ``OSError`` the caller can say
    (uvicorn would exit the whole process, the stack with it)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)  # connections wait in the backlog until uvicorn serves them
    sock.set_inheritable(True)
    return sock


def url_of(host: str, port: int) -> str:
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"
