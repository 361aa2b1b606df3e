"""A long-running process leaves what it loaded out of garbage collection.

Its modules, classes and functions live as long as it does; a full collection that walked
them all paused the service's event loop (40 ms on a 2-core machine) and took a tenth of a
views rebuild's time.
"""

from __future__ import annotations

import asyncio
import gc

from bus.operations.services import serve_until_stopped


async def test_a_service_runs_with_what_it_loaded_frozen_out_of_collection() -> None:
    frozen_while_serving: list[int] = []

    async def service(stop: asyncio.Event) -> None:
        frozen_while_serving.append(gc.get_freeze_count())

    try:
        await serve_until_stopped(service)
    finally:
        gc.unfreeze()  # this test process goes on collecting as before
    assert frozen_while_serving[0] > 10_000  # the modules and classes this process loaded
