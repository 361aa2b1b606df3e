"""Commands for a deployment's operators: its NATS identities, and setting it up once before
its services start."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from nats.errors import Error as NatsError

from bus.operations.cli.common import (
    StateDir,
    agent_app,
    app,
    auth_app,
    configure_logging,
    console,
    fail,
    run,
    settings_for,
)
from bus.settings import redacted

AuthDir = Annotated[
    Path | None,
    typer.Option("--dir", help="Where the identities live [<state-dir>/auth]."),
]


@app.command()
def init(state_dir: StateDir = None) -> None:
    """Create the ledger's tables, the views, the streams and consumers (idempotent).

    Run it once per deployment before the services (several at once is safe); the
    services check that it was done and refuse to start otherwise.
    """
    from bus.operations.deployment import initialise
    from bus.transport.connection import NoDeployment, require_named

    configure_logging()
    settings = settings_for(state_dir)
    try:
        require_named(settings)
        run(initialise(settings))
    except NoDeployment as error:
        raise fail(str(error)) from None
    except (NatsError, OSError, TimeoutError) as error:
        raise fail(f"set-up failed: {type(error).__name__}: {error}") from None
    console.print(
        f"claimcheck is set up: ledger {redacted(settings.ledger_url())}, "
        f"streams with prefix {settings.prefix!r} ({settings.stream_replicas} replicas)"
    )


@auth_app.command("init")
def auth_init(
    agents: Annotated[
        list[str] | None, typer.Option("--agent", help="An agent's name (repeat for each).")
    ] = None,
    directory: AuthDir = None,
    state_dir: StateDir = None,
) -> None:
    """Write the deployment's NATS operator, account and one user per role (.creds files),
    the servers' nats-auth.conf and the runtime's signing key. Existing ones are kept."""
    from bus.operations.deployment import issue_identities

    settings = settings_for(state_dir)
    where = directory or settings.state_dir / "auth"
    try:
        issued = issue_identities(settings, where, agents or [])
    except (ValueError, OSError) as error:
        raise fail(str(error)) from None
    for role, path in issued.items():
        console.print(f"{role}: {path}")
    console.print(
        f"servers: include {where / 'nats-auth.conf'} in each nats-server's configuration; "
        "give each process only its own .creds file (CLAIMCHECK_CREDENTIALS)"
    )


@agent_app.command("add")
def agent_add(
    name: Annotated[str, typer.Argument(help="The new agent's name, e.g. billing.")],
    policies: Annotated[
        Path, typer.Option("--policies", help="Where to write the agent's policy stub.")
    ] = Path("policies"),
    directory: AuthDir = None,
    state_dir: StateDir = None,
) -> None:
    """Give a new agent its NATS credentials (no server change or restart) and a policy stub."""
    from bus.operations.deployment import add_agent

    settings = settings_for(state_dir)
    try:
        added = add_agent(settings, directory or settings.state_dir / "auth", name, policies)
    except (ValueError, OSError) as error:
        raise fail(str(error)) from None
    console.print(f"credentials: {added.credentials}")
    console.print(f"policy stub: {added.policy_stub} (edit it, then merge it into the policy)")
    console.print(
        f"run it with CLAIMCHECK_CREDENTIALS={added.credentials} claimcheck agent run MODULE:OBJECT"
    )


auth_app.command("add-agent", help="The same as `claimcheck agent add`.")(agent_add)
