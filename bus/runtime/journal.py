"""The idempotency journal shared by every tool host of a deployment: a JetStream key-value bucket.

A per-host file cannot stop two hosts from running the same call at once, so the
journal lives in NATS, where every host of the deployment sees it, and every
change to an entry is a compare-and-set (``create`` fails when the key exists;
``update`` names the revision it read). For each idempotency key:

1. A host *claims* the key before the side effect: owner and lease expiry. The
   owner renews the lease while the effect runs (a heartbeat, as Temporal
   activities do), so a lease outlives a slow SMTP server but not a dead host.
2. Another host that finds a live claim waits for the result or for the lease
   to expire; it never runs the effect beside the owner.
3. The result is stored under the key and returned to every later call.
   The host answers its own call as soon as the result is known, while it stores
   it: an answer waiting for the store would make no crash safer (a host that dies
   before storing the result leaves the same unknown outcome either way), only
   every tool step slower.
   A transient failure releases the key instead, before the answer: nothing
   happened, so a retry may act at once.
4. A claim whose lease expired without a result means its owner died
   mid-effect: the outcome is *unknown*. The next host takes the claim over
   (compare-and-set, so exactly one does), notes the unknown attempt in the
   entry and in its result, and runs the tool again, relying on the external
   system's own idempotency to make the second attempt a no-op where the first
   took effect (a ticket's unique idempotency key; an email's Message-ID
   derived from the key, by which the receiving side can drop a duplicate).

Lease expiry is wall-clock time: the hosts of one deployment are assumed to
keep their clocks within a fraction of the lease of each other (NTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Literal
from uuid import uuid4

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from handoff_schemas import ToolResult

log = logging.getLogger(__name__)

State = Literal["claimed", "done", "released"]
RECORD_ATTEMPTS = 8
"""Tries to record a result while NATS is away (about 10 s with the backoff)."""


class Entry(msgspec.Struct, rename="camel"):
    """One idempotency key's journal entry, as stored in the bucket."""

    key: str
    state: State
    owner: str
    lease_until: float
    """Epoch seconds after which a ``claimed`` entry without a result is presumed orphaned."""
    attempts: int = 1
    unknown: list[str] = []
    """Owners whose claims expired with no recorded result: their outcome is unknown."""
    result: ToolResult | None = None


def host_identity() -> str:
    """Who holds a claim: readable in the journal, unique per process start."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid4().hex[:8]}"


def bucket_key(idempotency_key: str) -> str:
    """Idempotency keys come from agents' step keys; hash them into a valid, fixed-size KV key."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()


STOPPING = ToolResult(status="failed", error="the tool host is stopping", transient=True)
"""A stopping host's answer to a call it has not begun: it runs nothing new, and waits on
no other claim (one renewed through a long effect held the host's stop as long)."""

Effect = Callable[[str], Awaitable[ToolResult]]
"""Runs the side effect; its argument says why it runs again ("" on a first attempt)."""


class SharedJournal:
    """Runs each idempotency key's effect once across every host that shares ``bucket``."""

    def __init__(
        self, kv: KeyValue, owner: str, lease_seconds: float, poll_seconds: float = 0.1
    ) -> None:
        self.kv = kv
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.stopping = False
        """Set by a stopping host: calls not begun are answered :data:`STOPPING`."""
        self._recording: set[asyncio.Task[ToolResult | None]] = set()

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str, lease_seconds: float) -> SharedJournal:
        """The bucket, once the runtime has created it: a host without a journal must not serve.

        Waiting (not failing) lets a stack start its processes in any order.
        """
        waited = 0
        while True:
            try:
                kv = await js.key_value(bucket)
            except BucketNotFoundError:
                if waited % 20 == 0:  # a line every 10 s, not a flood
                    log.info("waiting for the journal bucket %s (the runtime creates it)", bucket)
                waited += 1
                await asyncio.sleep(0.5)
                continue
            return cls(kv, host_identity(), lease_seconds)

    async def once(self, idempotency_key: str, effect: Effect) -> ToolResult:
        """The result of ``effect`` for this key, running it only if no host did or does.

        A first call claims the key without looking first (one write, not a read and a
        write); only a key claimed before, by another host or an earlier attempt, is read.
        """
        name = bucket_key(idempotency_key)
        entry: Entry | None = None
        revision = 0
        while True:
            now = time.time()
            if entry is None:
                if self.stopping:
                    return STOPPING
                claim = Entry(idempotency_key, "claimed", self.owner, now + self.lease_seconds)
                try:
                    revision = await self.kv.create(name, msgspec.json.encode(claim))
                except KeyWrongLastSequenceError:  # claimed before: read that claim
                    entry, revision = await self._read(name)
                    continue
                return await self._act(name, claim, revision, effect)
            if entry.state == "done" and entry.result is not None:
                log.info("%s answered from the journal (run by %s)", idempotency_key, entry.owner)
                return entry.result
            if self.stopping:  # nothing starts or waits here now: the caller asks again
                return STOPPING
            if entry.state == "claimed" and entry.lease_until > now:
                if entry.owner != self.owner:
                    log.info("%s in flight on %s; waiting", idempotency_key, entry.owner)
                await asyncio.sleep(self.poll_seconds)
                entry, revision = await self._read(name)
                continue
            unknown = [*entry.unknown, entry.owner] if entry.state == "claimed" else entry.unknown
            claim = Entry(
                idempotency_key,
                "claimed",
                self.owner,
                now + self.lease_seconds,
                attempts=entry.attempts + 1,
                unknown=unknown,
            )
            try:
                revision = await self.kv.update(name, msgspec.json.encode(claim), last=revision)
            except KeyWrongLastSequenceError:  # another host took it over first
                entry, revision = await self._read(name)
                continue
            return await self._act(name, claim, revision, effect)

    async def _read(self, name: str) -> tuple[Entry | None, int]:
        try:
            found = await self.kv.get(name)
        except KeyNotFoundError:  # includes a deleted key: create() handles both
            return None, 0
        assert found.value is not None and found.revision is not None
        return msgspec.json.decode(found.value, type=Entry), found.revision

    async def _act(self, name: str, claim: Entry, revision: int, effect: Effect) -> ToolResult:
        """Run the effect under our claim, renewing its lease; return its result once it is
        known, and record it (a final one in the background, see :meth:`recorded`)."""
        reconciling = ""
        if claim.unknown:
            reconciling = (
                f"the attempt by {claim.unknown[-1]} ended with no recorded result "
                "(outcome unknown); ran again with the same idempotency key"
            )
            log.warning("%s: %s", claim.key, reconciling)
        lease = _Lease(self, name, claim, revision)
        renewing = asyncio.create_task(lease.renew())
        try:
            result = await effect(reconciling)
        except BaseException:
            await _stopped(renewing)
            raise
        if reconciling:
            result = msgspec.structs.replace(result, reconciled=reconciling)
        transient = result.status == "failed" and result.transient
        final = msgspec.structs.replace(
            lease.claim,
            state="released" if transient else "done",
            result=None if transient else result,
        )
        if transient:  # released first, so the caller's retry finds the key free
            return await self._record(lease, renewing, final) or result
        recording = asyncio.create_task(self._record(lease, renewing, final))
        self._recording.add(recording)
        recording.add_done_callback(self._recording.discard)
        return result

    async def _record(
        self, lease: _Lease, renewing: asyncio.Task[None], final: Entry
    ) -> ToolResult | None:
        """Store ``final`` over our claim; the journal's own result if another host's
        stands there instead. Never raises: the answer may already be on its way."""
        try:
            try:
                recorded = await lease.finish(final)  # still renewing while NATS is away
            finally:
                await _stopped(renewing)
            if recorded:
                return None
            # Our lease lapsed (this process stalled) and another host took the key over:
            # both ran the effect. Keep the journal's first answer; say so loudly.
            log.error("%s: lost the claim while acting; another host ran it too", final.key)
            current, _ = await self._read(lease.name)
            if current is not None and current.state == "done" and current.result is not None:
                return current.result
            await self.kv.put(lease.name, msgspec.json.encode(final))
        except Exception:
            log.exception(
                "%s: could not record the result; the next call of this key will find its "
                "outcome unknown and reconcile it",
                final.key,
            )
        return None

    async def recorded(self) -> None:
        """Wait until every result this host has answered with is in the journal (a host
        stopping calls this before it closes its connection)."""
        while self._recording:
            await asyncio.gather(*self._recording)


async def _stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class _Lease:
    """Keeps a claim alive while its owner acts: a heartbeat every third of the lease.

    The heartbeat and the final record take turns (a lock), since each names the
    revision the other wrote; after the final record the heartbeat stops for good.
    """

    def __init__(self, journal: SharedJournal, name: str, claim: Entry, revision: int) -> None:
        self.journal = journal
        self.name = name
        self.claim = claim
        self.revision = revision
        self.finished = False
        self._turn = asyncio.Lock()

    async def renew(self) -> None:
        while True:
            await asyncio.sleep(self.journal.lease_seconds / 3)
            async with self._turn:
                if self.finished:
                    return
                renewed = msgspec.structs.replace(
                    self.claim, lease_until=time.time() + self.journal.lease_seconds
                )
                try:
                    self.revision = await self.journal.kv.update(
                        self.name, msgspec.json.encode(renewed), last=self.revision
                    )
                except KeyWrongLastSequenceError:
                    log.error("%s: the claim was taken over while this host acts", self.claim.key)
                    return
                except Exception as error:  # NATS reconnecting: try again at the next beat
                    log.warning("%s: could not renew the lease: %s", self.claim.key, error)
                    continue
                self.claim = renewed

    async def finish(self, final: Entry) -> bool:
        """Record the outcome over our claim; ``False`` if another host holds the key now.

        A NATS error is retried for a while: the effect happened, and a result lost here
        would make the next host reconcile an outcome this host knows.
        """
        async with self._turn:
            self.finished = True
            for attempt in range(RECORD_ATTEMPTS):
                try:
                    self.revision = await self.journal.kv.update(
                        self.name, msgspec.json.encode(final), last=self.revision
                    )
                    return True
                except KeyWrongLastSequenceError:
                    return False
                except Exception as error:
                    if attempt == RECORD_ATTEMPTS - 1:
                        raise
                    log.warning("%s: could not record the result: %s", self.claim.key, error)
                    await asyncio.sleep(min(0.2 * 2**attempt, 2.0))
        raise AssertionError("unreachable")
