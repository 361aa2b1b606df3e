"""Commands that run something: the services, one agent, the embedded stack, the demo and
the benchmark."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bus import telemetry
from bus.operations.cli.common import (
    StateDir,
    agent_app,
    app,
    configure_logging,
    console,
    current_project,
    fail,
    notes,
    run,
    schemas_app,
    settings_for,
    tools_app,
    with_role_credentials,
)
from bus.runtime import Policy, PolicyError
from bus.settings import Settings

if TYPE_CHECKING:
    from bus.operations.services import Service
    from bus.operations.stack import Stack


@app.command()
def runtime(state_dir: StateDir = None) -> None:
    """Run the runtime: the only ledger writer, answering agents over NATS."""
    from bus.operations.services import run_runtime

    configure_logging()
    settings = with_role_credentials(settings_for(state_dir), "runtime")
    try:
        # A bad policy or price table stops the runtime before it serves.
        policy = Policy.load(settings.policy, settings.prices)
    except PolicyError as error:
        raise fail(f"bad policy: {error}") from None
    serve(lambda stop: run_runtime(settings, policy, stop), settings)


@tools_app.command("serve")
def tools_serve(
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            help="MODULE:CATALOGUE to serve, e.g. my_tools:catalogue (modules in the current "
            "directory are found); default: the project's catalogues."
        ),
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Run a tool host: register its tools' schemas with the deployment, then serve them."""
    from bus.operations.services import run_tool_host
    from bus.runtime.catalogue import CatalogueNotFound, ToolDeclarationError, load_catalogue

    configure_logging()
    try:
        catalogues = [load_catalogue(t) for t in targets or current_project().tools]
    except (CatalogueNotFound, ToolDeclarationError) as error:
        raise fail(str(error)) from None
    if not catalogues:
        raise fail("no tool catalogues: give MODULE:CATALOGUE, or list tools in claimcheck.toml")
    settings = with_role_credentials(settings_for(state_dir), "tools")
    serve(lambda stop: run_tool_host(settings, catalogues, stop), settings)


@agent_app.command("run")
def agent_run(
    target: Annotated[str, typer.Argument(help="MODULE:OBJECT, e.g. agents.complaints:triage")],
    state_dir: StateDir = None,
) -> None:
    """Run one agent as this process (with the credentials `claimcheck up` made for it)."""
    from bus.runtime.catalogue import CatalogueNotFound, load_object
    from bus.transport.auth import agent_role

    configure_logging()
    try:
        agent = load_object(target)
    except CatalogueNotFound as error:
        raise fail(str(error)) from None

    role = agent_role(agent.name)
    settings = with_role_credentials(settings_for(state_dir), role)
    made = settings.state_dir / "credentials"
    if settings.credentials is None and (made / "cli.json").exists():  # `up` made credentials,
        raise fail(  # but none for this agent: it could only loop on authorization errors
            f"agent {agent.name!r} has no credentials in {made}: list {target} in "
            "claimcheck.toml and restart `claimcheck up`"
        )

    async def main(stop: asyncio.Event) -> None:
        telemetry.setup(f"claimcheck-agent-{agent.name}")
        try:
            await agent.run(settings, stop)
        finally:
            telemetry.shutdown()

    serve(main, settings)


def serve(service: Service, settings: Settings) -> None:
    """Run a long-lived service; one that has no deployment to serve says so and exits 1."""
    from bus.operations.services import serve_until_stopped
    from bus.transport.connection import NoDeployment, NotInitialised, require_named

    try:
        require_named(settings)
        run(serve_until_stopped(service))
    except (NoDeployment, NotInitialised) as error:
        raise fail(str(error)) from None


@app.command()
def up(
    state_dir: StateDir = None,
    local_smtp: Annotated[
        bool, typer.Option("--local-smtp", help="Run a local SMTP server that prints what it gets.")
    ] = False,
    ui_port: Annotated[
        int, typer.Option("--ui-port", help="The web console's port; 0 for no console.")
    ] = 8280,
    reload: Annotated[
        bool,
        typer.Option(
            "--reload", help="Developer mode: restart the agents and tool hosts on code changes."
        ),
    ] = False,
) -> None:
    """Start nats-server, the runtime, and the tool hosts and agents of the project
    (claimcheck.toml here, else the example), and the web console."""
    from bus.operations.mailbox import Mailbox
    from bus.operations.services import serve_until_stopped
    from bus.operations.stack import STACK_STOP_SECONDS, Stack

    settings = settings_for(state_dir)
    mailbox = Mailbox(
        port=settings.smtp_port,
        maildir=settings.maildir_path(),  # where `verify --external` finds what it received
        on_message=lambda m: console.print(
            f"SMTP server received: {m['To']}: {m['Subject']}", markup=False, highlight=False
        ),
    )

    project = current_project()

    async def main(stop: asyncio.Event) -> None:
        async with Stack.for_project(settings, project) as stack:
            console.print(
                f"claimcheck is up: NATS at {settings.nats_url}, state in {settings.state_dir}"
            )
            console.print(f"processes: {', '.join(stack.processes)}; Ctrl-C stops them all")
            if local_smtp:
                console.print(f"local SMTP server on 127.0.0.1:{settings.smtp_port}")
            async with web_console(settings, ui_port), reloading(stack, reload, stop):
                await stop.wait()

    if local_smtp:
        mailbox.start()
    try:  # stopping every child may take a while: each gets its own grace
        with stack_refusals():
            run(serve_until_stopped(main, grace=STACK_STOP_SECONDS))
    finally:
        if local_smtp:
            mailbox.stop()


@asynccontextmanager
async def web_console(settings: Settings, port: int) -> AsyncIterator[None]:
    """The console beside the stack, stopped before it (a taken port is said, not fatal)."""
    if not port:
        yield
        return
    from bus.operations.cli.console import announce
    from bus.operations.console.server import (
        console_server,
        listening_socket,
        stop_server,
        url_of,
    )

    try:
        sock = listening_socket("127.0.0.1", port)
    except OSError as error:
        console.print(f"the web console cannot listen on port {port} ({error}): not started")
        yield
        return
    server = console_server(settings, port=port, embedded=True)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    announce(settings, url_of("127.0.0.1", port))
    try:
        yield
    finally:
        stop_server(server)
        await asyncio.gather(serving, return_exceptions=True)


@asynccontextmanager
async def reloading(stack: Stack, enabled: bool, stop: asyncio.Event) -> AsyncIterator[None]:
    """With ``--reload``, the stack's code processes restart when the code here changes."""
    if not enabled:
        yield
        return

    def pids(names: list[str]) -> str:
        return ", ".join(f"{name} (pid {stack.processes[name].pid})" for name in names)

    here = Path.cwd()
    console.print(f"watching {here} for code changes: {pids(stack.code_processes())}")
    watcher = asyncio.create_task(
        stack.reload_on_change(here, stop, lambda names: console.print(f"reloaded {pids(names)}"))
    )
    try:
        yield
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


@app.command()
def down(state_dir: StateDir = None) -> None:
    """Stop the stack that `claimcheck up` (or the demo) runs for this state directory."""
    from bus.operations.stack import STACK_STOP_SECONDS, StateLock

    settings = settings_for(state_dir)
    lock = StateLock(settings.state_dir)
    pid = lock.holder()
    if pid is None:
        console.print(f"no stack runs for {settings.state_dir}")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STACK_STOP_SECONDS
    while lock.holder() == pid:
        if time.monotonic() > deadline:  # its children die with it
            os.kill(pid, signal.SIGKILL)
            raise fail(f"the stack (pid {pid}) did not stop within {STACK_STOP_SECONDS}s: killed")
        time.sleep(0.2)
    console.print(f"stopped the stack (pid {pid}) for {settings.state_dir}")


@contextmanager
def stack_refusals() -> Iterator[None]:
    """A state directory in use or a port taken is a message, not a traceback."""
    from bus.operations.stack import StackBusy
    from bus.transport.server import PortTaken

    try:
        yield
    except (StackBusy, PortTaken) as refused:
        raise fail(str(refused)) from None


@app.command()
def bench(
    count: Annotated[int, typer.Option(min=1, help="Operations per micro path.")] = 1000,
    workflows: Annotated[int, typer.Option(min=1, help="Whole workflows per row.")] = 200,
    steps: Annotated[int, typer.Option(min=1, help="Tool steps per workflow.")] = 5,
    postgres: Annotated[
        str,
        typer.Option(
            help="A PostgreSQL URL: also run 1 and 2 runtimes, and the ledger reads, on it."
        ),
    ] = "",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write every figure, as JSON, here.")
    ] = None,
    big_ledger: Annotated[
        bool, typer.Option(help="Also measure a 1,000,000-event ledger (minutes).")
    ] = False,
    ledger_events: Annotated[
        int, typer.Option(min=1, help="Events in the ledger that verify and views rebuild read.")
    ] = 20_000,
    compare: Annotated[
        Path | None,
        typer.Option(help="An earlier run's --json file: each ratio beside it, drops called out."),
    ] = None,
) -> None:
    """Measure each hot path next to its raw baseline, on a private nats-server and disk."""
    from rich.console import Console

    from bus.operations.bench import run_bench
    from bus.operations.bench.history import ledger_size_table
    from bus.operations.bench.report import (
        NotABenchRun,
        earlier_ratios,
        regressions,
        table,
        write_json,
    )

    try:
        earlier = None if compare is None else earlier_ratios(compare)
    except NotABenchRun as error:
        raise fail(str(error)) from None
    results = run(
        run_bench(
            count,
            workflows,
            steps,
            postgres,
            lambda line: notes.print(line),
            big_ledger,
            ledger_events,
        )
    )
    wide = Console(width=max(console.width, 200))
    wide.print(table(results, earlier))
    by_size = ledger_size_table(results)
    if by_size is not None:
        wide.print(by_size)
    if json_out is not None:
        write_json(json_out, results)
    if earlier is not None:
        dropped = regressions(results, earlier)
        summary = f"{len(dropped)} of {len(results)} rows"
        wide.print(f"worse than {compare} by more than noise: {summary}")
        for line in dropped:
            wide.print(f"  {line}")


@app.command()
def demo(state_dir: StateDir = None) -> None:
    """Run the complaint demo with every part as a real process, then stop them all."""
    from bus.operations.demo import run_demo

    with stack_refusals():
        result = run(run_demo(settings_for(state_dir or Path(".claimcheck"))))
    unsettled = [view.workflow_id for view in result.views if not view.settled]
    if unsettled:
        raise fail(f"workflows did not finish: {unsettled}")
    ended = [view for view in result.views if view.status in ("failed", "stopped")]
    if ended:  # none of the demo's complaints should: the model or a service is at fault
        raise fail(
            "; ".join(
                f"workflow {view.workflow_id} {view.status}: {view.outcome}" for view in ended
            )
        )


@schemas_app.command("export")
def schemas_export(
    directory: Path,
    tools: Annotated[
        list[str] | None,
        typer.Option(
            "--tools", help="MODULE:CATALOGUE whose tools to export; default: the project's."
        ),
    ] = None,
) -> None:
    """Write the protocol: a JSON Schema per wire type and per tool input and output, and
    the AsyncAPI 3 document (asyncapi.json). docs/protocol/ is this command's output."""
    from bus.operations.asyncapi import export_protocol
    from bus.runtime.catalogue import (
        CatalogueNotFound,
        ToolDeclarationError,
        load_catalogue,
    )

    if directory.exists() and not directory.is_dir():
        raise fail(f"{directory} is a file: give a directory to write the schemas into")
    try:
        catalogues = [load_catalogue(t) for t in tools or current_project().tools]
    except (CatalogueNotFound, ToolDeclarationError) as error:
        raise fail(str(error)) from None
    for path in export_protocol(directory, catalogues):
        console.print(str(path))
