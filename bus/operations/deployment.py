"""Setting up a deployment once: the ledger's tables, the views, the streams and consumers.

``claimcheck init`` runs this before any service starts (the compose file's init job,
the embedded stack before its runtimes). Every step is idempotent and safe to run from
several places at once, so a second init, or two at the same moment, change nothing.
"""

from __future__ import annotations

import asyncio
import logging

from nats.errors import Error as NatsError

from bus.ledger.setup import init_ledger
from bus.ledger.view_runner import open_views
from bus.settings import Settings
from bus.transport.connection import connect, ensure_streams
from bus.transport.subjects import Subjects

log = logging.getLogger(__name__)


async def initialise(settings: Settings, attempts: int = 10) -> None:
    """Create what every service expects to find, on the ledger and on NATS."""
    url = settings.ledger_url()
    if url.startswith("sqlite"):
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(init_ledger, url, lambda: open_views(settings))
    nc = await connect(settings, "claimcheck-init")
    try:
        subjects = Subjects(settings.prefix)
        for attempt in range(attempts):
            try:
                await ensure_streams(nc.jetstream(), subjects, settings.stream_replicas)
                break
            except NatsError as error:
                # Another init created the same stream or bucket between our look and our
                # create, or the cluster is electing a leader: look again.
                if attempt == attempts - 1:
                    raise
                log.info("setting up streams again after %s", error)
                await asyncio.sleep(0.2 * (attempt + 1))
    finally:
        await nc.close()
