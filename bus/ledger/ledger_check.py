"""``verify`` over the whole ledger (or one workflow), streamed.

The ledger is read in pages in position order (:mod:`bus.ledger.scan`) and, online, the
events stream through ONE ordered consumer for the whole stream (not one per workflow:
a server's consumer limit stopped that at about a thousand workflows). The stream is read
ahead of the ledger: a copy on the stream was committed before it was published, so every
ledger event up to the last copy read is already in the ledger when its page is read, and
an event committed while ``verify`` runs is only ever lag, never a false break.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from bus.ledger.scan import EnvelopeReader, pages
from bus.ledger.store import Ledger
from bus.ledger.verification import (
    Break,
    ChainCheck,
    StreamComparison,
    ahead,
    by_position,
    by_version,
    earliest,
    read_published,
)
from bus.transport.signing import Verifier
from bus.transport.subjects import Subjects
from handoff_schemas import EventEnvelope

COPIES_PER_BATCH = 2000
"""Stream messages read before the ledger catches up to them: the copies held at once."""


QUIET = 3.0
"""Seconds without a message that end the stream's read (it normally ends on the message
that has nothing pending after it); only an empty stream waits this long."""


@dataclass(frozen=True)
class Outcome:
    """What ``verify`` prints: the first break, or how much was found intact."""

    broken: Break | None
    workflows: int
    evidence: int
    events: int
    compared: bool
    """Whether the events stream was compared (online), or the chain only."""


class LedgerCheck:
    """The chain and, given copies, the stream comparison, fed one event at a time."""

    def __init__(self, verifier: Verifier | None, one_workflow: bool) -> None:
        key = by_version if one_workflow else by_position
        self.chain = ChainCheck(verifier, key)
        self.comparison = StreamComparison(key)
        self.first: Break | None = None
        self.workflows = 0
        self.events = 0

    def count(self, event_type: str) -> None:
        """An event neither check reads (offline, no evidence in it): counted, not decoded."""
        self.events += 1
        if event_type == "WorkflowStarted":
            self.workflows += 1

    def event(self, event: EventEnvelope, compare: bool) -> None:
        self.count(event.type)
        broken = self.chain.check(event)
        if broken is not None:
            self.first = earliest((self.first, broken))
        if compare:
            self.comparison.event(event)

    def outcome(self, compared: bool, lookup: LookUp | None = None) -> Outcome:
        self.chain.close()
        found = self.comparison.finish(lookup or (lambda _: None)) if compared else []
        broken = earliest((self.first, *found))
        return Outcome(broken, self.workflows, self.chain.records, self.events, compared)


class LookUp:
    """One ledger event by its key, for the rare copy read behind the others (a republish)."""

    def __init__(self, ledger: Ledger, history: list[EventEnvelope] | None) -> None:
        self.reader = EnvelopeReader(ledger)
        self.versions = {e.version: e for e in history} if history is not None else None

    def __call__(self, key: int) -> EventEnvelope | None:
        if self.versions is not None:
            return self.versions.get(key)
        found = self.reader.ledger.recorder.select_notifications(key, 1)
        return self.reader.envelope(found[0]) if found and found[0].id == key else None


def ledger_events(
    ledger: Ledger, history: list[EventEnvelope] | None
) -> Iterator[list[EventEnvelope]]:
    """One workflow's history at once, or the whole ledger a page at a time."""
    if history is not None:
        yield history
        return
    reader = EnvelopeReader(ledger)
    for page in pages(ledger):
        yield [reader.envelope(notification) for notification in page]


def evidence_pages(ledger: Ledger, check: LedgerCheck) -> Iterator[list[EventEnvelope]]:
    """The ledger's evidence records a page at a time (and any event the fast reader cannot
    name); the other events are only counted: the chain reads nothing else."""
    reader = EnvelopeReader(ledger)
    for page in pages(ledger):
        read = []
        for notification in page:
            name = reader.event_name(notification.topic)
            if name is None or name == "EvidenceRecorded":
                read.append(reader.envelope(notification))
            else:
                check.count(name)
        yield read


def verify_offline(
    ledger: Ledger, verifier: Verifier | None, history: list[EventEnvelope] | None = None
) -> Outcome:
    """The evidence chain of every workflow (or of ``history``), streamed from the ledger."""
    check = LedgerCheck(verifier, history is not None)
    source = [history] if history is not None else evidence_pages(ledger, check)
    for page in ahead(source, check.chain):
        for event in page:
            check.event(event, compare=False)
    return check.outcome(compared=False)


async def verify_online(
    ledger: Ledger,
    nc: Client,
    subjects: Subjects,
    verifier: Verifier | None,
    history: list[EventEnvelope] | None = None,
    unreadable: list[str] | None = None,
) -> Outcome:
    """The chain, and the ledger against the events stream read by one consumer."""
    one = history[0].workflow_id if history else None
    check = LedgerCheck(verifier, history is not None)
    comparison = check.comparison
    events = ahead(ledger_events(ledger, history), check.chain)

    async def next_page() -> list[EventEnvelope] | None:
        return await asyncio.to_thread(next, events, None)  # type: ignore[arg-type]

    exhausted = False
    async for copies in published_batches(nc, subjects, one, unreadable):
        comparison.copies(copies)
        while not exhausted and comparison.events_high < comparison.copies_high:
            page = await next_page()
            exhausted = page is None
            for event in page or ():
                check.event(event, compare=True)
    comparison.end_of_stream()
    while not exhausted:
        page = await next_page()
        exhausted = page is None
        for event in page or ():
            check.event(event, compare=True)
    return await asyncio.to_thread(check.outcome, True, LookUp(ledger, history))


async def published_batches(
    nc: Client,
    subjects: Subjects,
    workflow_id: str | None = None,
    unreadable: list[str] | None = None,
    size: int | None = None,
) -> AsyncIterator[list[EventEnvelope]]:
    """The events stream (or one workflow's part), in stream order, a batch at a time.

    One ordered consumer, read by a callback into batches (``next_msg`` per message made
    a task and a timer each: 5 k events/s). At most two batches wait, then the callback
    waits too; what nats-py buffers below it is bounded by the consumer's flow control only
    (a smaller pending limit makes it drop messages, which an ordered consumer does not
    redeliver). Anything not an event is reported in ``unreadable`` and skipped.
    """
    batches = Batches(workflow_id, unreadable, size or COPIES_PER_BATCH)
    subscription = await nc.jetstream().subscribe(
        subjects.event(workflow_id, ">") if workflow_id else f"{subjects.prefix}.events.>",
        stream=subjects.stream("events"),
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
        cb=batches.take,
    )
    try:
        while True:
            try:
                batch = await asyncio.wait_for(batches.ready.get(), QUIET)
            except TimeoutError:
                batch = batches.flush()  # quiet: an empty stream, or one that stopped
                if batch:
                    yield batch
                return
            if batch is None:
                return
            yield batch
    finally:
        batches.done = True
        await subscription.unsubscribe()


class Batches:
    """What the events stream's callback fills: batches of copies, and None at the end."""

    def __init__(self, workflow_id: str | None, unreadable: list[str] | None, size: int) -> None:
        self.workflow_id, self.unreadable, self.size = workflow_id, unreadable, size
        self.ready: asyncio.Queue[list[EventEnvelope] | None] = asyncio.Queue(maxsize=2)
        self.batch: list[EventEnvelope] = []
        self.done = False

    async def take(self, msg: Msg) -> None:
        if self.done:
            return  # published after the end was read: lag, for the next verify
        event = read_published(msg.data, self.unreadable)
        if event is not None and self.workflow_id in (None, event.workflow_id):
            self.batch.append(event)
        last = pending_after(msg) == 0
        if len(self.batch) >= self.size or last:
            await self.ready.put(self.flush())
        if last:
            self.done = True
            await self.ready.put(None)

    def flush(self) -> list[EventEnvelope]:
        batch, self.batch = self.batch, []
        return batch


def pending_after(msg: Msg) -> int:
    """How many messages the consumer has after this one, from its reply subject
    (``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``, or with a
    domain and account first and a token after): parsing all its metadata took as long
    as decoding the event."""
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9:
        return int(tokens[8])
    if len(tokens) >= 12:
        return int(tokens[10])
    return msg.metadata.num_pending


async def published_events(
    nc: Client, subjects: Subjects, workflow_id: str, unreadable: list[str] | None = None
) -> list[EventEnvelope]:
    """Every copy of a workflow's events on the events stream (``unreadable`` gets the rest)."""
    return [
        event
        async for batch in published_batches(nc, subjects, workflow_id, unreadable)
        for event in batch
    ]
