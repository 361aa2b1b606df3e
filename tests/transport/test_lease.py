"""The lease in a JetStream key-value bucket, against a real nats-server: one holder at a
time, taken over only once the holder stops renewing, lost by a holder that was replaced,
given up at once by a clean stop, and a failed job handed over rather than held."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js import JetStreamContext

from bus.transport.lease import LEASE_SECONDS, Lease, ensure_lease_bucket
from bus.transport.server import EmbeddedNats

pytestmark = pytest.mark.timeout(60)
BUCKET = "t-leases"


@pytest.fixture
async def js(nats_server: EmbeddedNats) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_server.url)
    await ensure_lease_bucket(nc.jetstream(), BUCKET)
    await ensure_lease_bucket(nc.jetstream(), BUCKET)  # idempotent
    yield nc.jetstream()
    await nc.close()


async def test_one_holder_until_it_stops_renewing(js: JetStreamContext) -> None:
    holder, standby = [await Lease.open(js, BUCKET, "job") for _ in range(2)]
    assert await holder.acquire()
    assert not await standby.acquire()
    for _ in range(3):  # renewed past the lease's length: still the holder's
        await asyncio.sleep(LEASE_SECONDS / 2)
        assert await holder.renew()
        assert not await standby.acquire()
    stopped = time.monotonic()
    for _ in range(100):
        if await standby.acquire():
            break
        await asyncio.sleep(0.1)
    assert LEASE_SECONDS - 0.5 < time.monotonic() - stopped < LEASE_SECONDS + 2
    assert not await holder.renew()  # it was replaced, and learns it


async def test_a_clean_stop_hands_over_at_once(js: JetStreamContext) -> None:
    holder, standby = [await Lease.open(js, BUCKET, "job") for _ in range(2)]
    assert await holder.acquire()
    await holder.release()
    assert await standby.acquire()


async def test_the_job_runs_only_while_held(js: JetStreamContext) -> None:
    runs: list[str] = []

    def job(name: str):  # type: ignore[no-untyped-def]
        async def run() -> None:
            runs.append(name)
            await asyncio.Event().wait()

        return run

    first, second = [await Lease.open(js, BUCKET, "job") for _ in range(2)]
    one = asyncio.create_task(first.run_while_held(job("first")))
    await asyncio.sleep(0.3)
    two = asyncio.create_task(second.run_while_held(job("second")))
    await asyncio.sleep(LEASE_SECONDS / 2)
    assert runs == ["first"]
    one.cancel()  # a clean stop: released, so the standby takes over at its next look
    await asyncio.gather(one, return_exceptions=True)
    await asyncio.sleep(LEASE_SECONDS / 2)
    assert runs == ["first", "second"]
    two.cancel()
    await asyncio.gather(two, return_exceptions=True)


async def test_a_failed_job_is_handed_over_and_tried_again(js: JetStreamContext) -> None:
    attempts: list[float] = []

    async def failing() -> None:
        attempts.append(time.monotonic())
        raise RuntimeError("boom")

    lease = await Lease.open(js, BUCKET, "job")
    task = asyncio.create_task(lease.run_while_held(failing))
    await asyncio.sleep(LEASE_SECONDS)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert 2 <= len(attempts) <= 4, attempts  # again, but not in a hot loop
    other = await Lease.open(js, BUCKET, "job")
    assert await other.acquire()  # the failed holder released it


async def test_a_holder_cut_off_from_nats_gives_up_after_a_lease(
    nats_server: EmbeddedNats, js: JetStreamContext
) -> None:
    nc = await nats.connect(nats_server.url, allow_reconnect=False)
    lease = await Lease.open(nc.jetstream(), BUCKET, "job")
    assert await lease.acquire()
    await nc.close()
    assert await lease.renew()  # not renewed, but still its own for the rest of the lease
    lease.renewed_at -= LEASE_SECONDS
    assert not await lease.renew()  # a standby may have it by now: stop the job
