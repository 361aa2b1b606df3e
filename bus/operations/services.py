"""Entry points for the long-running processes: the runtime, the tool host and agents.

Each runs until SIGTERM or SIGINT, then drains its NATS connection so that
in-flight replies are still sent. A service that cannot finish that within a few
seconds (NATS unreachable, still connecting) is cancelled: stopping never waits on
the network, and nothing is lost by it (unacknowledged work is redelivered, and
recorded steps replay).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable

from bus import telemetry
from bus.ledger.relay import RELAY_JOB, Relay
from bus.ledger.setup import NotInitialised, open_ledger
from bus.ledger.view_runner import VIEWS_JOB, ViewRunner, open_views
from bus.runtime.catalogue import Catalogue
from bus.runtime.governance import after_quarantine
from bus.runtime.policy import Policy
from bus.runtime.service import Runtime
from bus.runtime.tool_host import ToolHost
from bus.settings import Settings, redacted
from bus.transport.connection import InboxConfig, check_streams, connect
from bus.transport.lease import Lease
from bus.transport.subjects import Subjects

log = logging.getLogger(__name__)


STOP_GRACE_SECONDS = 5.0
"""How long a stopping service may take to finish cleanly before it is cancelled."""

Service = Callable[[asyncio.Event], Awaitable[None]]
"""A service runs until the event is set, then cleans up."""


YOUNG_COLLECTION_EVERY = 10_000
"""Container objects a process may gain on balance before its youngest generation is
collected (Python's default is 700)."""


def tune_garbage_collection() -> None:
    """Collect garbage for a long-running process: less often, and without what it loaded.

    Its modules, classes and functions (about 70,000 objects) live as long as the process,
    yet each full collection walked them all: 40 ms on a 2-core machine, a pause of a
    service's event loop, and a tenth of a views rebuild's time. :func:`gc.freeze` moves
    them to the permanent generation (reference counting still frees any that is dropped).
    With 200 workflows in flight the runtime's objects come and go by the thousand, so at
    Python's default it collected its youngest generation about 90 times a second, and the
    stack's collections took 7-8% of its CPU; collected every 10,000 objects, 2-3%.
    """
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])


async def serve_until_stopped(service: Service, grace: float = STOP_GRACE_SECONDS) -> None:
    """Run ``service`` until SIGTERM or SIGINT, and cancel it if it overstays ``grace``."""
    tune_garbage_collection()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    running = asyncio.create_task(service(stop))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    await asyncio.wait({running}, timeout=grace)
    if running.done():
        running.result()  # what the service raised, its caller reports
        return
    log.warning("stopped without a clean shutdown: it took longer than %ss", grace)
    await cancel_until_done(running)


CANCEL_AGAIN_SECONDS = 0.1
"""How long a cancelled service has to end before it is cancelled again."""


async def cancel_until_done(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` until it has ended, not just once.

    Python 3.11's ``asyncio.wait_for`` turns a cancellation that arrives just as its inner
    future completes into that future's result. nats-py's connect loop awaits a refused
    connection that way and retries what it raised, so a service still connecting to an
    unreachable server can lose one cancellation and would otherwise never stop.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_AGAIN_SECONDS)
    if not task.cancelled():
        task.exception()  # retrieved: it ended on its way out, past caring


async def run_runtime(settings: Settings, policy: Policy, stop: asyncio.Event) -> None:
    telemetry.setup("claimcheck-runtime")
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    # Set-up is ``claimcheck init``'s: a runtime that finds it missing says so and stops.
    ledger = open_ledger(settings.ledger_url())
    nc = await connect(settings, "claimcheck-runtime")
    js = nc.jetstream()
    subjects = Subjects(settings.prefix)
    try:
        await check_streams(js, subjects)
    except NotInitialised:
        await nc.close()
        ledger.close()
        raise
    relay = Relay(
        ledger,
        nc,
        subjects,
        inbox=InboxConfig.of(settings),
        after_quarantine=after_quarantine(policy),
    )
    views = ViewRunner(ledger, open_views(settings, create=False))

    def committed() -> None:
        relay.wake()
        views.wake()

    runtime = Runtime(settings, ledger, policy, nc, on_commit=committed)
    await runtime.serve()
    # One replica's relay publishes, and one replica's runner applies the views, at a time;
    # the others stand by to take over.
    relay_lease = await Lease.open(js, subjects.lease_bucket, RELAY_JOB)
    views_lease = await Lease.open(js, subjects.lease_bucket, VIEWS_JOB)
    relay_task = asyncio.create_task(relay_lease.run_while_held(relay.run))
    views_task = asyncio.create_task(views_lease.run_while_held(views.run))
    where = redacted(settings.ledger_url())
    log.info("runtime serving %s with ledger %s", subjects.runtime_all, where)
    try:
        await stop.wait()
    finally:
        # First, so the leases are released while NATS is still there.
        for held in (relay_task, views_task):
            held.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await held
        await nc.drain()
        await relay.close()
        await views.close()
        runtime.close()
        ledger.close()
        telemetry.shutdown()


async def run_tool_host(
    settings: Settings, catalogues: list[Catalogue], stop: asyncio.Event
) -> None:
    telemetry.setup("claimcheck-tools")
    nc = await connect(settings, "claimcheck-tools")
    host = ToolHost(settings, catalogues)
    await host.serve(nc)
    log.info("tool host serving %s", sorted(host.tools))
    try:
        await stop.wait()
    finally:
        try:
            await host.stop()
        finally:
            await nc.drain()
            telemetry.shutdown()
