"""What every command shares: the typer app and its groups, settings, errors as messages,
and the two ways in (as the operator over NATS, or straight to the ledger)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
import uvloop
from nats.aio.client import Client
from nats.errors import Error as NatsError
from rich.console import Console

from bus.ledger import Ledger, LedgerError
from bus.settings import Settings, redacted
from bus.transport.subjects import OPERATOR, Subjects
from projections import EscalationsView
from projections.escalations import fold_escalations

if TYPE_CHECKING:
    from bus.operations.project import Project

app = typer.Typer(
    help="An event-sourced, governed message bus for multi-agent AI workflows.",
    no_args_is_help=True,
)
tools_app = typer.Typer(help="Tool hosts.", no_args_is_help=True)
agent_app = typer.Typer(help="Agents.", no_args_is_help=True)
schemas_app = typer.Typer(help="Wire schemas.", no_args_is_help=True)
escalations_app = typer.Typer(help="Questions for humans.", no_args_is_help=True)
views_app = typer.Typer(help="Read models.", no_args_is_help=True)
audit_app = typer.Typer(help="Read-only auditing.", no_args_is_help=True)
auth_app = typer.Typer(help="A deployment's NATS identities.", no_args_is_help=True)
app.add_typer(tools_app, name="tools")
app.add_typer(agent_app, name="agent")
app.add_typer(schemas_app, name="schemas")
app.add_typer(escalations_app, name="escalations")
app.add_typer(views_app, name="views")
app.add_typer(audit_app, name="audit")
app.add_typer(auth_app, name="auth")

T = TypeVar("T")
console = Console()
notes = Console(stderr=True)  # what a command says about itself, apart from its answer
StateDir = Annotated[
    Path | None, typer.Option("--state-dir", help="State directory [.claimcheck].")
]


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine to its end on uvloop.

    The event loop's own work (callbacks, the selector, socket transports) was a tenth or
    more of every service's CPU under load; uvloop does it in C. Measured on a stack: the
    runtime's and the agent's CPU per handoff 5-25% lower, handoffs 5-22% faster.
    """
    return uvloop.run(main)


def settings_for(state_dir: Path | None) -> Settings:
    try:
        return Settings(state_dir=state_dir) if state_dir else Settings()
    except (ValueError, OSError) as error:  # a bad claimcheck.toml or CLAIMCHECK_* value
        raise fail(f"bad settings: {error}") from None


def current_project() -> Project:
    """The current directory's ``claimcheck.toml`` (or the example project), or a message."""
    from bus.operations.project import ProjectError, find_project

    try:
        return find_project()
    except ProjectError as error:
        raise fail(str(error)) from None


def with_role_credentials(settings: Settings, role: str) -> Settings:
    """``settings`` with the credentials `claimcheck up` made for ``role`` in the state
    directory, unless some were given: a process joins the stack without variables."""
    discovered = settings.state_dir / "credentials" / f"{role}.json"
    if settings.credentials is None and discovered.exists():
        settings.credentials = discovered
    return settings


def print_version(asked: bool) -> None:
    if asked:
        print(f"claimcheck {metadata.version('claimcheck')}")
        raise typer.Exit()


@app.callback()
def options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=print_version, is_eager=True
        ),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    """An event-sourced, governed message bus for multi-agent AI workflows."""
    DEBUG.set(debug)


DEBUG: ContextVar[bool] = ContextVar("debug", default=False)


def main() -> None:
    """The ``claimcheck`` script: an unexpected error is one line unless ``--debug`` is given."""
    try:
        app()
    except Exception as error:
        if DEBUG.get():
            raise
        notes.print(
            f"error: {type(error).__name__}: {error} (run with --debug for the traceback)",
            markup=False,
            highlight=False,
        )
        sys.exit(1)


def fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/] {message}")
    return typer.Exit(code=1)


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


class StackDown(Exception):
    """No deployment answers where the settings point: reads fall back to the ledger."""


def over_nats(settings: Settings, action: Callable[[Client, Subjects], Awaitable[T]]) -> T:
    """Connect as the operator to the deployment the settings name, and run ``action``.

    Without ``CLAIMCHECK_CREDENTIALS``, the operator credentials that ``claimcheck
    up`` wrote to the state directory are used. Raises :class:`StackDown` when that
    deployment is not there (never a stranger's server in its place).
    """
    from bus.operations.operators import OperatorError
    from bus.transport.connection import NoDeployment, connect

    with_role_credentials(settings, OPERATOR)

    async def main() -> T:
        nc = await connect(settings, "claimcheck-cli", patient=False)
        try:
            return await action(nc, Subjects(settings.prefix))
        finally:
            await nc.close()

    try:
        return run(main())
    except NoDeployment as error:
        raise StackDown(str(error)) from None
    except OperatorError as error:
        raise fail(str(error)) from None
    except (NatsError, OSError, TimeoutError) as error:
        raise fail(
            f"NATS at {settings.nats_url} did not serve this request ({type(error).__name__}: "
            f"{error}); is `claimcheck up` running for {settings.state_dir}?"
        ) from None


def run_as_operator(settings: Settings, action: Callable[[Client, Subjects], Awaitable[T]]) -> T:
    """A command that changes something: it needs the running stack, and says how to start it."""
    try:
        return over_nats(settings, action)
    except StackDown as down:
        raise fail(
            f"{down}. This command needs the running stack: start it with "
            f"`claimcheck up --state-dir {settings.state_dir}`."
        ) from None


def from_stack_or_ledger(
    settings: Settings,
    action: Callable[[Client, Subjects], Awaitable[T]],
    from_ledger: Callable[[], T],
) -> T:
    """A command that reads: from the stack when it runs, else from the ledger, saying so."""
    try:
        return over_nats(settings, action)
    except StackDown as down:
        notes.print(f"{down}; reading the ledger at {redacted(settings.ledger_url())} instead")
        return from_ledger()


def open_ledger(settings: Settings) -> Ledger:
    try:
        return Ledger.from_url(settings.ledger_url())
    except Exception as error:  # a missing file, a refused connection, a bad URL
        where = redacted(settings.ledger_url())
        raise fail(f"cannot open the ledger at {where}: {error}") from None


def ledger_history(settings: Settings, workflow: str) -> list:
    ledger = open_ledger(settings)
    try:
        return ledger.history(workflow)
    except LedgerError as error:
        raise fail(str(error)) from None
    finally:
        ledger.close()


def fresh_views(settings: Settings):  # type: ignore[no-untyped-def]
    """The read models, caught up with the ledger first."""
    from bus.ledger.view_runner import ViewRunner, open_views

    ledger = open_ledger(settings)
    try:
        views = open_views(settings)
        ViewRunner(ledger, views).catch_up()
    finally:
        ledger.close()
    return views


def ledger_histories(settings: Settings, workflow: str | None = None) -> dict[str, list]:
    """Every workflow's events (or one's), read straight from the ledger."""
    ledger = open_ledger(settings)
    try:
        workflows = [workflow] if workflow else ledger.workflow_ids()
        return {wf: ledger.history(wf) for wf in workflows}
    except LedgerError as error:
        raise fail(str(error)) from None
    finally:
        ledger.close()


def ledger_escalations(settings: Settings) -> EscalationsView:
    """Escalations folded from the ledger's events: the answer when the stack is down."""
    return fold_escalations(e for history in ledger_histories(settings).values() for e in history)
