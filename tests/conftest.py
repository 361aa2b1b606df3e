"""Fixtures that start real parts, in one place for every test folder: a nats-server on a
free port, a SQLite file or a PostgreSQL schema of the test's own, the runtime and a tool
host over NATS, a local SMTP server, and the ``claimcheck`` command as its own process.
Every fixture stops what it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from uuid import uuid4

import pytest
import uvloop
from nats.aio.client import Client

from agents import Agent, Context, Model
from bus.ledger import Ledger
from bus.ledger.relay import Relay
from bus.operations.mailbox import Mailbox
from bus.operations.operators import submit, watch
from bus.runtime.catalogue import Catalogue
from bus.runtime.policy import Policy
from bus.runtime.service import Runtime
from bus.runtime.tool_host import ToolHost
from bus.settings import Settings
from bus.tools import complaints
from bus.transport.auth import Credentials
from bus.transport.connection import connect, ensure_streams
from bus.transport.server import EmbeddedNats
from bus.transport.subjects import Subjects
from projections import WorkflowView

POSTGRES_URL = os.environ.get(
    "CLAIMCHECK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)


def postgres_connection():  # type: ignore[no-untyped-def]
    """A psycopg connection to the test server, or a skip (a failure under CI=true)."""
    try:
        import psycopg

        parsed = urlparse(POSTGRES_URL)
        return psycopg.connect(
            host=parsed.hostname,
            port=parsed.port or 5432,
            user=parsed.username,
            dbname=parsed.path.lstrip("/"),
            connect_timeout=5,
            autocommit=True,
        )
    except Exception as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required under CI=true: {error}")
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL}: {error}")


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Every async test runs on uvloop: the loop every ``claimcheck`` process runs on."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(autouse=True)
def any_free_nats_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stacks started by tests (and the commands they run) take a free port, not the default:
    a test must never meet another test's server, or a developer's own stack."""
    monkeypatch.setenv("CLAIMCHECK_NATS_PORT", "0")


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty ledger: a SQLite file, or a PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    yield from postgres_schema()


@pytest.fixture
def postgres_ledger_url() -> Iterator[str]:
    """A fresh, empty ledger in a PostgreSQL schema dropped afterwards."""
    yield from postgres_schema()


def postgres_schema() -> Iterator[str]:
    schema = f"cc_test_{uuid4().hex[:12]}"
    with postgres_connection() as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        try:
            yield f"{POSTGRES_URL}?schema={schema}"
        finally:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    ledger = Ledger.from_url(ledger_url)
    yield ledger
    ledger.close()


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats")
    await server.start()
    yield server
    await server.stop()


def cluster_config(name: str, route_ports: list[int], own: int) -> str:
    """The ``cluster`` block of one node of a JetStream cluster on loopback ports."""
    routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in route_ports if port != own)
    return f"cluster {{\n  name: cc-test\n  listen: 127.0.0.1:{own}\n  routes: [{routes}]\n}}\n"


async def start_nats_cluster(
    where: Path,
    extra_config: str = "",
    user: str | None = None,
    password: str | None = None,
    creds: Path | None = None,
) -> list[EmbeddedNats]:
    """Three nats-server processes forming one JetStream cluster (streams may have 3 replicas).

    Returns once the cluster has a JetStream meta leader. ``extra_config`` (an
    ``authorization`` block, or ``nats-auth.conf``) goes into every node; ``user`` and
    ``password``, or a ``.creds`` file, are for the readiness check then.
    """
    import nats

    from bus.transport.server import free_port

    route_ports = [free_port() for _ in range(3)]
    nodes = [
        EmbeddedNats(
            where / f"nats-{n}",
            name=f"cc-node-{n}-{uuid4().hex[:6]}",
            authorization=extra_config + cluster_config(f"node-{n}", route_ports, route_ports[n]),
        )
        for n in range(3)
    ]
    await asyncio.gather(*(node.start() for node in nodes))
    if creds is not None:
        options = Credentials.load(creds).connect_options()
    else:
        inbox = {"inbox_prefix": f"_INBOX_{user}"} if user else {}  # per-role inboxes
        options = {"user": user, "password": password, **inbox}
    nc = await nats.connect([node.url for node in nodes], **options)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                await nc.jetstream().account_info()
                break
            except Exception:
                assert time.monotonic() < deadline, "the cluster elected no JetStream leader"
                await asyncio.sleep(0.25)
    finally:
        await nc.close()
    return nodes


@pytest.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[list[EmbeddedNats]]:
    nodes = await start_nats_cluster(tmp_path)
    yield nodes
    await asyncio.gather(*(node.stop() for node in nodes))


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """A real SMTP server on a free port, keeping what it receives."""
    box = Mailbox()
    box.start()
    yield box
    box.stop()


CLI = [sys.executable, "-m", "bus.operations.cli"]


def claimcheck(
    *args: str,
    state_dir: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the command line as its own process, as a user would (wide, so lines don't wrap)."""
    where = ["--state-dir", str(state_dir)] if state_dir else []
    return subprocess.run(
        [*CLI, *args, *where],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "400", **(env or {})},
    )


@pytest.fixture
def settings(
    tmp_path: Path, nats_server: EmbeddedNats, mailbox: Mailbox, ledger_url: str
) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        nats_url=nats_server.url,
        ledger=ledger_url,
        smtp_port=mailbox.port,
        tool_timeout=5.0,
        request_timeout=10.0,
    )


@pytest.fixture
def policy(request: pytest.FixtureRequest, tmp_path: Path) -> Policy:
    """The in-process runtime's policy: the test module's ``POLICY`` text, else the default."""
    text = getattr(request.module, "POLICY", None)
    if text is None:
        return Policy.load()
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return Policy.load(path)


@pytest.fixture
def catalogue() -> Catalogue:
    """The tools the tool host serves (and so the runtime learns); a test module may override
    this."""
    return complaints


@dataclass
class Bus:
    """The runtime and a tool host in this process, talking over the real nats-server."""

    settings: Settings
    nc: Client
    ledger: Ledger
    runtime: Runtime
    subjects: Subjects


@pytest.fixture
async def bus(
    settings: Settings, ledger: Ledger, policy: Policy, catalogue: Catalogue
) -> AsyncIterator[Bus]:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    nc = await connect(settings, "test-bus")
    subjects = Subjects(settings.prefix)
    await ensure_streams(nc.jetstream(), subjects)
    relay = Relay(ledger, nc, subjects, poll_interval=0.2)
    runtime = Runtime(settings, ledger, policy, nc, on_commit=relay.wake)
    await runtime.serve()
    await ToolHost(settings, [catalogue]).serve(nc)
    relay_task = asyncio.create_task(relay.run())
    yield Bus(settings, nc, ledger, runtime, subjects)
    relay_task.cancel()
    await relay.close()  # before the ledger fixture closes the ledger under a read
    await nc.drain()
    runtime.close()


Handler = Callable[[Context], Awaitable[None]]


@asynccontextmanager
async def running_agent(bus: Bus, handler: Handler, model: Model) -> AsyncIterator[None]:
    """``handler`` as the triage agent's task ``t``, consuming its inbox while inside."""
    agent = Agent("triage", model=model)
    agent.task("t")(handler)
    stop = asyncio.Event()
    runner = asyncio.create_task(agent.run(bus.settings, stop))
    try:
        yield
    finally:
        stop.set()
        await runner


async def run_workflow(
    bus: Bus,
    handler: Handler,
    model: Model,
    budget: float | None = None,
    until: Callable[[WorkflowView], bool] = lambda view: view.settled,
) -> WorkflowView:
    """Run ``handler`` as the triage agent on one new workflow until it settles."""
    async with running_agent(bus, handler, model):
        reply = await submit(bus.nc, bus.subjects, "t", "triage", b"{}", budget_usd=budget)
        return await watch(bus.nc, bus.subjects, reply.workflow_id, timeout=20, until=until)


async def relayed(bus: Bus) -> None:
    """Wait until the relay has published everything in the ledger."""
    last = bus.ledger.recorder.max_notification_id()
    tracking = bus.ledger.factory.tracking_recorder()
    async with asyncio.timeout(10):
        while (tracking.max_tracking_id("relay") or 0) < last:  # noqa: ASYNC110 (polls the ledger)
            await asyncio.sleep(0.05)


@pytest.fixture
def running_stack(tmp_path: Path, mailbox: Mailbox) -> Iterator[Path]:
    """``claimcheck up`` in the background, stopped with SIGTERM like Ctrl-C."""
    state_dir = tmp_path / "state"
    up = subprocess.Popen(
        [*CLI, "up", "--state-dir", str(state_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "CLAIMCHECK_SMTP_PORT": str(mailbox.port)},
    )
    try:
        assert up.stdout is not None
        for line in up.stdout:
            if "claimcheck is up" in line:
                break
        else:
            pytest.fail(f"claimcheck up exited with {up.wait()}")
        yield state_dir
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=30) == 0
    leftover = subprocess.run(["pgrep", "-f", str(state_dir)], capture_output=True, text=True)
    assert leftover.stdout == "", "claimcheck up left processes running"


def open_escalation(state_dir: Path, workflow_id: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = claimcheck("escalations", "list", "--json", state_dir=state_dir)
        assert listed.returncode == 0, listed.stdout + listed.stderr
        found = [e for e in json.loads(listed.stdout) if e["workflowId"] == workflow_id]
        if found:
            return found[0]
        time.sleep(0.2)
    pytest.fail(f"workflow {workflow_id} never escalated")


def submit_press_complaint(state_dir: Path, tmp_path: Path) -> str:
    complaint = tmp_path / "press.json"
    complaint.write_text(
        json.dumps({"customer": "fabrikam", "text": "journalist asking about a leak"})
    )
    submitted = claimcheck(
        "submit",
        "triage_complaint",
        "--to",
        "triage",
        "--input",
        str(complaint),
        state_dir=state_dir,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    return submitted.stdout.strip()


# -- the web console -------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CONSOLE_TOKEN = "test-console-token"


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError as error:
        return f"playwright is not installed: {error}"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Debian's headless Chromium through Playwright, or a skip (a failure under CI=true)."""
    missing = chromium_missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser tests need Chromium under CI=true: {missing}")
        pytest.skip(missing)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@asynccontextmanager
async def web_console(settings: Settings) -> AsyncIterator[str]:
    """The console for ``settings``, served by uvicorn in this loop on a free port: its URL."""
    import uvicorn

    from bus.operations.console.app import create_app
    from bus.operations.console.server import ConsoleServer, listening_socket, stop_server

    sock = listening_socket("127.0.0.1", 0)
    config = uvicorn.Config(create_app(settings, CONSOLE_TOKEN), log_level="warning")
    server = ConsoleServer(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop_server(server)
        await serving


@pytest.fixture
async def demo_stack(tmp_path: Path, mailbox: Mailbox) -> AsyncIterator[tuple[Settings, list]]:
    """The demo's three complaints run on a real stack (the journalist's left escalated)."""
    from rich.console import Console

    from bus.operations.demo import run_complaints
    from bus.operations.stack import Stack

    settings = Settings(state_dir=tmp_path / "state", smtp_port=mailbox.port)
    async with Stack(settings):
        views = await run_complaints(settings, Console(quiet=True))
        yield settings, views
