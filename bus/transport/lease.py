"""A lease in a JetStream key-value bucket: one holder at a time does a job, the others stand by.

Relay replicas use it so that one of them publishes the ledger's events and the others
take over within seconds when it dies (:mod:`bus.ledger.relay`). Publishing twice would
be harmless (message ids deduplicate), so the lease divides work rather than guarding
safety; it must only never leave the job undone for long.

The bucket has a TTL (:data:`LEASE_SECONDS`): the holder's entry expires unless renewed,
and the server's clock decides when, so hosts need not agree on the time. Every change
is a compare-and-set on the key's revision: ``create`` succeeds for one standby only
once the key is gone (expired, or released by a holder that stopped cleanly), and a
renewal that names a revision someone else replaced tells the old holder it lost the
lease. A holder that cannot renew (NATS away) stops the job once its last renewal is a
lease old, since by then a standby may have taken over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from uuid import uuid4

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import StorageType
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

LEASE_SECONDS = 4.0
"""How long a lease lasts unrenewed: the longest a dead holder's job waits for a standby."""
RENEW_EVERY = LEASE_SECONDS / 4
"""The holder renews, and a standby tries to take the lease, this often."""


async def ensure_lease_bucket(js: JetStreamContext, bucket: str, replicas: int = 1) -> None:
    """The leases' bucket; ``claimcheck init`` creates it (entries expire after the lease)."""
    try:
        await js.key_value(bucket)
    except BucketNotFoundError:
        await js.create_key_value(
            bucket=bucket,
            description="claimcheck leases: one holder per job",
            history=1,
            ttl=LEASE_SECONDS,
            storage=StorageType.FILE,
            replicas=replicas,
        )


def holder_identity() -> str:
    """Who holds a lease: readable in the bucket, unique per process start."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid4().hex[:8]}"


class Lease:
    """The lease on one job (a key of the bucket), as seen by one would-be holder."""

    def __init__(self, kv: KeyValue, job: str, holder: str | None = None) -> None:
        self.kv = kv
        self.job = job
        self.holder = holder or holder_identity()
        self.revision = 0
        self.renewed_at = 0.0

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str, job: str) -> Lease:
        return cls(await js.key_value(bucket), job)

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it."""
        try:
            self.revision = await self.kv.create(self.job, self.holder.encode())
        except KeyWrongLastSequenceError:
            return False
        self.renewed_at = time.monotonic()
        return True

    async def renew(self) -> bool:
        """Extend the lease; False once it is someone else's or may be (too long unrenewed)."""
        try:
            self.revision = await self.kv.update(self.job, self.holder.encode(), last=self.revision)
        except KeyWrongLastSequenceError:
            return False
        except (NatsError, TimeoutError) as error:
            log.warning("lease on %s not renewed: %s", self.job, error)
            return time.monotonic() - self.renewed_at < LEASE_SECONDS
        self.renewed_at = time.monotonic()
        return True

    async def release(self) -> None:
        """Give the lease up at once (a clean stop), so a standby need not wait it out."""
        with contextlib.suppress(NatsError, TimeoutError, KeyWrongLastSequenceError):
            await self.kv.delete(self.job, last=self.revision)

    async def run_while_held(self, job: Callable[[], Awaitable[None]]) -> None:
        """Stand by until the lease is free, run ``job`` while holding it, and stand by
        again if it is lost; for ever (until cancelled, which releases it)."""
        while True:
            if not await self._try_acquire():
                await asyncio.sleep(RENEW_EVERY)
                continue
            log.info("%s took the lease on %s", self.holder, self.job)
            running = asyncio.create_task(job())
            held = True
            try:
                while held and not running.done():
                    await asyncio.sleep(RENEW_EVERY)
                    held = await self.renew()
            finally:
                try:
                    await self._stop(running)
                finally:
                    await self.release()
            if not held:
                log.warning("%s lost the lease on %s", self.holder, self.job)
            else:  # the job ended by itself (it failed): hand over, then try again
                await asyncio.sleep(RENEW_EVERY)

    async def _stop(self, running: asyncio.Task[None]) -> None:
        running.cancel()
        try:
            await running
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this task is being cancelled too, not only the job
        except Exception:
            log.exception("the job under the lease on %s failed", self.job)

    async def _try_acquire(self) -> bool:
        try:
            return await self.acquire()
        except (NatsError, TimeoutError) as error:
            log.warning("lease on %s not taken: %s", self.job, error)
            return False
