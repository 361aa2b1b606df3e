"""Commands for a deployment's operators: setting it up once before its services start."""

from __future__ import annotations

import asyncio

from nats.errors import Error as NatsError

from bus.operations.cli.common import StateDir, app, configure_logging, console, fail, settings_for
from bus.settings import redacted


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
        asyncio.run(initialise(settings))
    except NoDeployment as error:
        raise fail(str(error)) from None
    except (NatsError, OSError, TimeoutError) as error:
        raise fail(f"set-up failed: {type(error).__name__}: {error}") from None
    console.print(
        f"claimcheck is set up: ledger {redacted(settings.ledger_url())}, "
        f"streams with prefix {settings.prefix!r} ({settings.stream_replicas} replicas)"
    )
