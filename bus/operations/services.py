"""Entry points for the long-running processes: the runtime and the tool host.

Each runs until SIGTERM or SIGINT, then drains its NATS connection so that
in-flight replies are still sent.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from bus import telemetry
from bus.ledger import Ledger
from bus.ledger.relay import Relay
from bus.ledger.view_runner import ViewRunner, open_views
from bus.runtime.policy import Policy
from bus.runtime.service import Runtime
from bus.runtime.tool_host import ToolHost
from bus.settings import Settings
from bus.transport.connection import connect, ensure_streams
from bus.transport.subjects import Subjects

log = logging.getLogger(__name__)


async def until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def run_runtime(settings: Settings) -> None:
    policy = Policy.load(settings.policy)  # fail at start-up on a bad policy
    telemetry.setup("claimcheck-runtime")
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger.from_url(settings.ledger_url())
    nc = await connect(settings, "claimcheck-runtime")
    js = nc.jetstream()
    subjects = Subjects(settings.prefix)
    await ensure_streams(js, subjects, settings.stream_replicas)
    relay = Relay(ledger, js, subjects)
    runtime = Runtime(settings, ledger, policy, nc, on_commit=relay.wake)
    await runtime.serve()
    relay_task = asyncio.create_task(relay.run())
    views = ViewRunner(ledger, open_views(settings))
    views_task = asyncio.create_task(views.run(nc, subjects))
    log.info("runtime serving %s with ledger %s", subjects.runtime_all, settings.ledger_url())
    try:
        await until_stopped()
    finally:
        await nc.drain()
        telemetry.shutdown()
        relay_task.cancel()
        views_task.cancel()
        await relay.close()
        await views.close()
        runtime.close()
        ledger.close()
        telemetry.shutdown()


async def run_tool_host(settings: Settings) -> None:
    telemetry.setup("claimcheck-tools")
    nc = await connect(settings, "claimcheck-tools")
    host = ToolHost(settings)
    await host.serve(nc)
    log.info("tool host serving %s", sorted(host.tools))
    try:
        await until_stopped()
    finally:
        await nc.drain()
        telemetry.shutdown()
