"""The embedded stack: nats-server, the runtime, a tool host and agents, each its own process.

Used by ``claimcheck up``, by the demo and by the tests that need real
processes (which is why processes can be killed and restarted one by one).
Every child gets the same ``CLAIMCHECK_*`` environment and logs to
``<state_dir>/logs/<name>.log``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from bus.connection import connect
from bus.server import EmbeddedNats
from bus.settings import Settings
from bus.subjects import Subjects

EXAMPLE_AGENTS = ("agents.complaints:triage", "agents.complaints:notifier")


@dataclass
class Stack:
    settings: Settings
    agents: tuple[str, ...] = EXAMPLE_AGENTS
    embedded_nats: bool = True
    nats: EmbeddedNats | None = None
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    def commands(self) -> dict[str, list[str]]:
        cli = [sys.executable, "-m", "bus.cli"]
        commands = {"runtime": [*cli, "runtime"], "tools": [*cli, "tools", "serve"]}
        for target in self.agents:
            commands[f"agent-{target.rsplit(':', 1)[-1]}"] = [*cli, "agent", "run", target]
        return commands

    async def start(self) -> None:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        if self.embedded_nats:
            self.nats = EmbeddedNats(self.settings.state_dir)
            await self.nats.start()
            self.settings.nats_url = self.nats.url
            (self.settings.state_dir / "nats.url").write_text(self.nats.url)
        for name in self.commands():
            await self.start_process(name)
        await self.wait_until_serving()

    async def start_process(self, name: str) -> asyncio.subprocess.Process:
        logs = self.settings.state_dir / "logs"
        logs.mkdir(exist_ok=True)
        with (logs / f"{name}.log").open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *self.commands()[name],
                stdout=log,
                stderr=log,
                env={**os.environ, **self.settings.as_environment()},
            )
        self.processes[name] = process
        return process

    async def kill(self, name: str) -> None:
        """SIGKILL one process: no clean-up, as in a crash."""
        process = self.processes[name]
        if process.returncode is None:
            process.kill()
        await process.wait()

    async def restart(self, name: str) -> None:
        await self.kill(name)
        await self.start_process(name)

    async def wait_until_serving(self, timeout: float = 30.0) -> None:
        """Wait until the runtime and the tool host answer requests."""
        nc = await connect(self.settings, "claimcheck-stack-probe")
        subjects = Subjects(self.settings.prefix)
        probes = [subjects.runtime("probe", "state"), subjects.tool("create_ticket")]
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            for subject in probes:
                while True:
                    self.raise_if_exited()
                    try:
                        await nc.request(subject, b"{}", timeout=1.0)
                        break
                    except (NoRespondersError, NatsTimeout):
                        if asyncio.get_running_loop().time() > deadline:
                            raise TimeoutError(f"nothing answers on {subject}") from None
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
        for process in self.processes.values():
            if process.returncode is None:
                process.terminate()
        for process in self.processes.values():
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self.nats:
            await self.nats.stop()
            (self.settings.state_dir / "nats.url").unlink(missing_ok=True)

    async def __aenter__(self) -> Stack:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
