"""The embedded stack: nats-server, the runtime, a tool host and agents, each its own process.

Used by ``claimcheck up``, by the demo and by the tests that need real
processes (which is why processes can be killed and restarted one by one).
One stack holds a state directory at a time (``stack.lock``), and its children
die with it, even when it is killed with SIGKILL.
Every child gets the same ``CLAIMCHECK_*`` environment plus the credentials of
its own role, and logs to ``<state_dir>/logs/<name>.log``. The embedded
nats-server runs with the generated per-role permissions (:mod:`bus.transport.auth`).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from bus.operations.project import EXAMPLE, Project
from bus.runtime.catalogue import load_catalogue, load_object
from bus.settings import Settings
from bus.transport.auth import agent_role, authorization_config, ensure_credentials
from bus.transport.connection import connect
from bus.transport.server import EmbeddedNats, die_with_parent, free_port
from bus.transport.subjects import OPERATOR, Subjects

EXAMPLE_AGENTS = tuple(entry.target for entry in EXAMPLE.agents)
EXAMPLE_TOOLS = tuple(EXAMPLE.tools)
PROCESS_STOP_SECONDS = 10.0
"""How long a child may take to stop on SIGTERM before it is killed."""
STACK_STOP_SECONDS = 2 * PROCESS_STOP_SECONDS + 10.0
"""Enough for every child to stop or be killed (they stop in parallel), and nats-server."""


def agent_name(target: str) -> str:
    """The name of the agent object at ``MODULE:OBJECT`` (its NATS identity)."""
    return load_object(target).name


def replica(name: str, index: int) -> str:
    """The process name of a role's ``index``-th replica: the first keeps the plain name."""
    return name if index == 1 else f"{name}-{index}"


async def stop_process(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, and SIGKILL if it has not stopped within ``PROCESS_STOP_SECONDS``."""
    if process.returncode is None:
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), PROCESS_STOP_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()


class StackBusy(RuntimeError):
    """Another stack holds this state directory."""


@dataclass
class StateLock:
    """One stack per state directory: an exclusive lock that the kernel releases when its
    holder exits, however it exits, so a crashed stack never blocks the next one."""

    state_dir: Path
    descriptor: int | None = None

    @property
    def path(self) -> Path:
        return self.state_dir / "stack.lock"

    def acquire(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode().strip() or "?"
            os.close(descriptor)
            raise StackBusy(
                f"a claimcheck stack (pid {holder}) already runs for {self.state_dir}: "
                f"stop it with `claimcheck down --state-dir {self.state_dir}`"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        self.descriptor = descriptor

    def release(self) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)  # closing releases the lock
            self.descriptor = None

    def holder(self) -> int | None:
        """The pid of the stack holding this state directory, or None if none does."""
        try:
            self.acquire()
        except StackBusy:
            return int(self.path.read_text().strip() or 0) or None
        self.release()
        return None


@dataclass
class Stack:
    settings: Settings
    agents: tuple[str, ...] = EXAMPLE_AGENTS
    embedded_nats: bool = True
    runtimes: int = 1
    """Runtime replicas: ``runtime``, ``runtime-2``, ... (they share the ledger)."""
    tools: tuple[str, ...] = EXAMPLE_TOOLS
    """Tool catalogues (``MODULE:CATALOGUE``), each served by its own tool hosts."""
    tool_hosts: int = 1
    """Tool hosts per catalogue: ``tools``, ``tools-2``, ... (they share the idempotency
    journal); with several catalogues, ``tools-<catalogue name>``, ``tools-<name>-2``, ..."""
    agent_replicas: int = 1
    """Processes per agent: ``agent-triage``, ``agent-triage-2``, ... (one work queue)."""
    replicas: dict[str, int] = field(default_factory=dict)
    """Processes of particular agents (by target), instead of ``agent_replicas``."""
    extra_roles: tuple[str, ...] = ()
    """Roles to make credentials for without starting a process (an agent run elsewhere)."""
    nats: EmbeddedNats | None = None
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    credentials: dict[str, Path] = field(default_factory=dict)
    lock: StateLock | None = None

    @classmethod
    def for_project(cls, settings: Settings, project: Project, **options: object) -> Stack:
        """The stack that runs what ``project`` lists (``options``: the other fields)."""
        return cls(
            settings,
            agents=tuple(entry.target for entry in project.agents),
            tools=tuple(project.tools),
            replicas={entry.target: entry.replicas for entry in project.agents},
            **options,  # type: ignore[arg-type]
        )

    def tool_host_names(self) -> dict[str, str]:
        """Catalogue target -> the process name of its first tool host."""
        if len(self.tools) == 1:
            return {self.tools[0]: "tools"}
        return {target: f"tools-{load_catalogue(target).name}" for target in self.tools}

    def commands(self) -> dict[str, tuple[str, list[str]]]:
        """Process name -> (role, command line)."""
        cli = [sys.executable, "-m", "bus.operations.cli"]
        commands: dict[str, tuple[str, list[str]]] = {}
        for index in range(1, self.runtimes + 1):
            commands[replica("runtime", index)] = ("runtime", [*cli, "runtime"])
        for target, name in self.tool_host_names().items():
            for index in range(1, self.tool_hosts + 1):
                commands[replica(name, index)] = ("tools", [*cli, "tools", "serve", target])
        for target in self.agents:
            name = agent_name(target)
            for index in range(1, self.replicas.get(target, self.agent_replicas) + 1):
                commands[replica(f"agent-{name}", index)] = (
                    agent_role(name),
                    [*cli, "agent", "run", target],
                )
        return commands

    async def start(self) -> None:
        """Start everything; on return, this process's settings act as the operator."""
        self.lock = StateLock(self.settings.state_dir)
        self.lock.acquire()
        if self.embedded_nats:
            await self.start_nats()
        await self.initialise()
        services = [name for name in self.commands() if not name.startswith("agent-")]
        for name in services:
            await self.start_process(name)
        await self.wait_until_serving()
        for name in self.commands():
            if name not in services:
                await self.start_process(name)

    async def start_nats(self) -> None:
        subjects = Subjects(self.settings.prefix)
        roles = [
            "runtime",
            "tools",
            OPERATOR,
            "auditor",
            *self.extra_roles,
            *(role for role, _ in self.commands().values()),
        ]
        self.credentials = ensure_credentials(
            self.settings.state_dir / "credentials", sorted(set(roles))
        )
        self.nats = EmbeddedNats(
            self.settings.state_dir,
            port=self.settings.nats_port or free_port(),
            authorization=authorization_config(self.credentials, subjects),
        )
        await self.nats.start()
        self.settings.nats_url = self.nats.url
        self.settings.nats_server_name = self.nats.name
        self.settings.credentials = self.credentials[OPERATOR]
        (self.settings.state_dir / "nats.url").write_text(self.nats.url)
        (self.settings.state_dir / "nats.server").write_text(self.nats.name)

    async def initialise(self) -> None:
        """``claimcheck init`` before any service: the runtimes only check it was done."""
        from bus.operations.deployment import initialise

        settings = self.settings.model_copy()
        if "runtime" in self.credentials:  # the operator may not create streams
            settings.credentials = self.credentials["runtime"]
        await initialise(settings)

    async def start_process(self, name: str) -> asyncio.subprocess.Process:
        role, command = self.commands()[name]
        environment = {**os.environ, **self.settings.as_environment()}
        if role in self.credentials:
            environment["CLAIMCHECK_CREDENTIALS"] = str(self.credentials[role])
        logs = self.settings.state_dir / "logs"
        logs.mkdir(exist_ok=True)
        with (logs / f"{name}.log").open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *command, stdout=log, stderr=log, env=environment, preexec_fn=die_with_parent
            )
        self.processes[name] = process
        return process

    async def kill(self, name: str) -> None:
        """SIGKILL one process: no clean-up, as in a crash."""
        process = self.processes[name]
        if process.returncode is None:
            process.kill()
        await process.wait()

    async def restart(self, name: str, graceful: bool = False) -> None:
        """Start ``name`` afresh: after a SIGKILL (a crash), or after SIGTERM (a reload)."""
        if graceful:
            await stop_process(self.processes[name])
        else:
            await self.kill(name)
        await self.start_process(name)

    def code_processes(self) -> list[str]:
        """The processes that run the project's own code: its tool hosts and agents."""
        return [name for name in self.processes if name.startswith(("tools", "agent-"))]

    async def reload_on_change(
        self, directory: Path, stop: asyncio.Event, reloaded: Callable[[list[str]], None]
    ) -> None:
        """Developer mode: when a Python file under ``directory`` changes, restart every tool
        host and agent (each stops cleanly first); ``reloaded`` hears which, once started."""
        from watchfiles import PythonFilter, awatch

        async for _ in awatch(directory, watch_filter=PythonFilter(), stop_event=stop):
            names = self.code_processes()
            for name in names:
                await self.restart(name, graceful=True)
            reloaded(names)

    async def wait_until_serving(self, timeout: float = 30.0) -> None:
        """Wait until the runtime answers the operator and each catalogue's tool host answers
        the runtime (having registered its tools first)."""
        subjects = Subjects(self.settings.prefix)
        async with asyncio.timeout(timeout):
            await self._wait_for_answer(OPERATOR, subjects.runtime(OPERATOR, "state"))
            for target in self.tools:
                for spec in load_catalogue(target).tools[:1]:
                    await self._wait_for_answer("runtime", subjects.tool(spec.name))

    async def _wait_for_answer(self, role: str, subject: str) -> None:
        probe = self.settings.model_copy(update={"credentials": self.credentials.get(role)})
        nc = await connect(probe, f"claimcheck-probe-{role}")
        try:
            while True:
                self.raise_if_exited()
                try:
                    await nc.request(subject, b"{}", timeout=1.0)
                    return
                except (NoRespondersError, NatsTimeout):
                    await asyncio.sleep(0.1)
        finally:
            await nc.close()

    def raise_if_exited(self) -> None:
        for name, process in self.processes.items():
            if process.returncode is not None:
                log = self.settings.state_dir / "logs" / f"{name}.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"{name} exited with code {process.returncode}:\n{tail}")

    async def stop(self) -> None:
        await asyncio.gather(*(stop_process(p) for p in self.processes.values()))
        if self.nats:
            await self.nats.stop()
            for found_by in ("nats.url", "nats.server"):
                (self.settings.state_dir / found_by).unlink(missing_ok=True)
        if self.lock:
            self.lock.release()

    async def __aenter__(self) -> Stack:
        try:
            await self.start()
        except StackBusy:
            raise  # nothing of ours to stop, and the other stack's files stay
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
