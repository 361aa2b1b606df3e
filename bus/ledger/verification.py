"""``claimcheck verify``: is the record intact?

Two independent checks, reported at the first record that breaks:

- the evidence chain in the ledger: each record's hash must match its fields, its
  signature must be the runtime's (when its public key is known), and its
  ``prevHash`` the hash of the record before it in the workflow;
- the ledger against the events stream: every event the relay published must
  still be in the ledger unchanged, and every ledger event must have been
  published. An edit to a stored event (in SQLite or PostgreSQL) shows here
  even when it touches no evidence.

Both checks stream: :class:`Verification` takes the ledger's events and the stream's
copies in order (by ledger position for the whole ledger, by version for one workflow)
and keeps only what the checks need of what came before: each workflow's last evidence
hash, the copies not matched yet (at most a page), and events with no copy that a later
quarantine may explain. So a ledger of millions of events, and the one consumer that reads
the events stream (:mod:`bus.ledger.ledger_check`), fit in bounded memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import msgspec

from bus.ledger import GENESIS_HASH
from bus.transport.signing import Verifier
from handoff_schemas import EventEnvelope, SchemaError, decode, evidence_hash

log = logging.getLogger(__name__)

Key = Callable[[EventEnvelope], int]
"""Where an event stands in the order both sides are read in: its position, or its version."""


def by_position(event: EventEnvelope) -> int:
    return event.position or 0


def by_version(event: EventEnvelope) -> int:
    return event.version


@dataclass(frozen=True)
class Break:
    workflow_id: str
    version: int
    event_type: str
    record: str
    problem: str
    order: int = field(default=0, compare=False)
    """Where it stands in the order the check read (position, or version): the first wins."""

    def __str__(self) -> str:
        return (
            f"workflow {self.workflow_id}, event {self.version} ({self.event_type}), "
            f"{self.record}: {self.problem}"
        )


class ChainCheck:
    """The evidence chain, one event at a time: per workflow, only its last evidence hash.

    With the runtime's public key (``verifier``), a record must carry the runtime's
    signature of its hash: one re-hashed by someone who can write the ledger is not.
    A workflow whose chain broke is not checked further (what follows is its consequence).
    Signatures of a page handed to :meth:`prefetch` are checked on another thread (libsodium
    runs outside the GIL) while this one decodes the next page: they were a fifth of the time.
    """

    def __init__(self, verifier: Verifier | None = None, key: Key = by_version) -> None:
        self.verifier = verifier
        self.key = key
        self.last: dict[str, str] = {}
        self.broken: set[str] = set()
        self.records = 0
        self._signed: dict[int, tuple[dict, Future[list[bool]], int]] = {}
        """By ``id`` of a record (held, so the id stays its own): its page's checks, its index."""
        self._pool: ThreadPoolExecutor | None = None

    def prefetch(self, events: Sequence[EventEnvelope]) -> None:
        """Start checking the signatures of these events' evidence records."""
        if self.verifier is None:
            return
        records = [e.data["evidence"] for e in events if e.type == "EvidenceRecorded"]
        if not records:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="signatures")
        future = self._pool.submit(self._signatures, records)
        for index, record in enumerate(records):
            self._signed[id(record)] = (record, future, index)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def _signatures(self, records: list[dict]) -> list[bool]:
        assert self.verifier is not None
        return [
            self.verifier.verify(str(r.get("hash")).encode(), r.get("signature")) for r in records
        ]

    def check(self, event: EventEnvelope) -> Break | None:
        if event.type != "EvidenceRecorded":
            return None
        record = event.data["evidence"]
        signed = self._prefetched(record)
        if event.workflow_id in self.broken:
            return None
        self.records += 1
        problem = self.problem(record, self.last.get(event.workflow_id, GENESIS_HASH), signed)
        if problem is None:
            self.last[event.workflow_id] = record["hash"]
            return None
        self.broken.add(event.workflow_id)
        self.last.pop(event.workflow_id, None)
        where = f"evidence {record.get('auditId')}"
        return Break(event.workflow_id, event.version, event.type, where, problem, self.key(event))

    def problem(self, record: dict, previous: str, signed: bool | None = None) -> str | None:
        if evidence_hash(record) != record.get("hash"):
            return "its fields do not match its hash (changed after it was recorded)"
        if self.verifier is not None:
            if signed is None:
                signed = self.verifier.verify(
                    str(record.get("hash")).encode(), record.get("signature")
                )
            if not signed:
                return "it is not signed by the runtime's key"
        if record.get("prevHash") != previous:
            return "its prevHash does not link to the record before it"
        return None

    def _prefetched(self, record: dict) -> bool | None:
        """The prefetched signature check of this very record, if there is one."""
        found = self._signed.pop(id(record), None)
        if found is None or found[0] is not record:
            return None
        return found[1].result()[found[2]]


def ahead(pages: Iterable[list[EventEnvelope]], chain: ChainCheck) -> Iterator[list[EventEnvelope]]:
    """``pages``, each given to :meth:`ChainCheck.prefetch` one page before it is yielded."""
    previous: list[EventEnvelope] | None = None
    for page in pages:
        chain.prefetch(page)
        if previous is not None:
            yield previous
        previous = page
    if previous is not None:
        yield previous


class StreamComparison:
    """The ledger against the events stream, both read in ``key`` order.

    Feed the copies up to some point first (:meth:`copies`), then the ledger's events up
    to there (:meth:`event`): copies wait for their event (a page at most), an event
    beyond the copies read so far waits for its copy, and an event with no copy is kept
    until the end, when a quarantine recorded after it may explain it. Ledger events past
    the last copy at the end are the relay's lag, not tampering.
    """

    def __init__(self, key: Key = by_position) -> None:
        self.key = key
        self.copies_high = 0
        self.events_high = 0
        self.stream_done = False
        self.waiting_copies: dict[int, EventEnvelope] = {}
        self.waiting_events: dict[int, EventEnvelope] = {}
        self.unpublished: dict[int, EventEnvelope] = {}
        self.quarantined: set[tuple[str, int]] = set()
        self.late: list[EventEnvelope] = []
        """Copies behind ones already read (a republish): checked at the end, one by one."""
        self.found: list[Break] = []

    def copies(self, copies: Iterable[EventEnvelope]) -> None:
        for copy in copies:
            where = self.key(copy)
            if where <= self.copies_high and where not in self.waiting_events:
                if self.unpublished.get(where) is not None:
                    self.compare(self.unpublished.pop(where), copy)
                elif where not in self.waiting_copies:
                    self.late.append(copy)
                continue
            self.copies_high = max(self.copies_high, where)
            if where in self.waiting_events:
                self.compare(self.waiting_events.pop(where), copy)
            elif where <= self.events_high:
                self.found.append(missing(copy, where))
            else:
                self.waiting_copies[where] = copy

    def end_of_stream(self) -> None:
        """No more copies: what waits for one now never gets it."""
        self.stream_done = True
        for where, event in self.waiting_events.items():
            if where <= self.copies_high:
                self.unpublished[where] = event
        self.waiting_events.clear()

    def event(self, event: EventEnvelope) -> None:
        where = self.key(event)
        self.events_high = max(self.events_high, where)
        if event.type == "EventQuarantined":
            self.quarantined.add((event.workflow_id, event.data.get("quarantined_version")))
        copy = self.waiting_copies.pop(where, None)
        if copy is not None:
            self.compare(event, copy)
        elif where <= self.copies_high:
            self.unpublished[where] = event
        elif not self.stream_done:
            self.waiting_events[where] = event
        # else: past the last copy at the end: the relay has not published it yet

    def finish(self, lookup: Callable[[int], EventEnvelope | None]) -> list[Break]:
        """Every break found, once both sides are read; ``lookup`` finds one ledger event."""
        for where, copy in self.waiting_copies.items():
            self.found.append(missing(copy, where))
        for where, event in self.unpublished.items():
            if (event.workflow_id, event.version) in self.quarantined:
                continue  # the relay could not publish it, and recorded so
            reason = "it is in the ledger but was never published"
            self.found.append(event_break(event, reason, where))
        for copy in self.late:
            event = lookup(self.key(copy))
            if event is None:
                self.found.append(missing(copy, self.key(copy)))
            else:
                self.compare(event, copy)
        return self.found

    def compare(self, event: EventEnvelope, copy: EventEnvelope) -> None:
        mine = (event.workflow_id, event.version, event.type)
        if mine == (copy.workflow_id, copy.version, copy.type) and same(event.data, copy.data):
            return
        changed = sorted(
            key
            for key in {*copy.data, *event.data}
            if canonical(copy.data.get(key)) != canonical(event.data.get(key))
        )
        changed += [
            name
            for name, ours, theirs in zip(
                ("workflow", "version"), mine, (copy.workflow_id, copy.version), strict=False
            )
            if ours != theirs
        ]
        reason = (
            f"the ledger differs from the copy published at position {copy.position}"
            f" (fields: {', '.join(changed) or 'type'})"
        )
        self.found.append(event_break(event, reason, self.key(event)))


def event_break(event: EventEnvelope, reason: str, where: int) -> Break:
    """A break found in a ledger event, at ledger position ``where``."""
    return Break(event.workflow_id, event.version, event.type, "the event", reason, where)


def missing(copy: EventEnvelope, where: int) -> Break:
    return Break(
        copy.workflow_id,
        copy.version,
        copy.type,
        "the event",
        "it was published but is missing from the ledger",
        where,
    )


def canonical(value: object) -> bytes:
    return msgspec.json.encode(value, order="sorted")


def same(ours: object, theirs: object) -> bool:
    """Equal as JSON: the relay keeps the ledger's key order, so most compare unsorted."""
    return msgspec.json.encode(ours) == msgspec.json.encode(theirs) or canonical(ours) == canonical(
        theirs
    )


def earliest(found: Iterable[Break | None]) -> Break | None:
    return min((b for b in found if b is not None), key=lambda b: b.order, default=None)


def check_chain(history: Sequence[EventEnvelope], verifier: Verifier | None = None) -> Break | None:
    """The first evidence record of one workflow whose hash, signature or link is wrong."""
    chain = ChainCheck(verifier)
    return next((b for b in map(chain.check, history) if b is not None), None)


def check_against_stream(
    history: Sequence[EventEnvelope], published: Sequence[EventEnvelope]
) -> Break | None:
    """The first event of one workflow where the ledger and the events stream disagree."""
    comparison = StreamComparison(by_version)
    comparison.copies(sorted(published, key=by_version))
    comparison.end_of_stream()
    for event in history:
        comparison.event(event)
    versions = {event.version: event for event in history}
    return earliest(comparison.finish(versions.get))


def first_break(
    history: Sequence[EventEnvelope],
    published: Sequence[EventEnvelope] | None,
    verifier: Verifier | None = None,
) -> Break | None:
    return earliest(
        (
            check_chain(history, verifier),
            check_against_stream(history, published) if published is not None else None,
        )
    )


def read_published(data: bytes, unreadable: list[str] | None = None) -> EventEnvelope | None:
    """One message of the events stream, or None (reported) when it is not an event.

    Only the relay should publish there; anything else is reported and skipped, so a
    stray message can neither crash ``verify`` nor pass for a copy of a ledger event.
    """
    try:
        return decode(data, EventEnvelope)
    except SchemaError as error:
        problem = f"skipped an unreadable message on the events stream: {error}"
        log.warning("%s", problem)
        if unreadable is not None:
            unreadable.append(problem)
        return None
