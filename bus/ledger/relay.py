"""The relay: publishes committed ledger events to JetStream (the outbox pattern).

The ledger is the source of truth; streams are derived from it. After each
commit the relay reads new notifications in ledger order and publishes:

- every event to ``<prefix>.events.<workflow>.<EventType>``;
- evidence records, again, to ``<prefix>.evidence.<workflow>`` for auditors;
- handoffs to the receiving agent's inbox ``<prefix>.handoff.<agent>`` (again
  when a human's approval resumes a workflow), creating the agent's inbox consumer
  before its first handoff;
- escalations and their resolutions to ``<prefix>.escalation.<workflow>``;
- handoffs no delivery could complete to ``<prefix>.deadletter.<agent>``.

Each stream's messages of a batch go as atomic batches (:func:`publish_batched`): with
``sync_interval: always``, one write to disk for a batch instead of an fsync per message,
which bounded every workflow's throughput.

Each message's ``Nats-Msg-Id`` is derived from the ledger position, so a
republish after a crash is dropped by JetStream's duplicate window. The relay
records its position with eventsourcing's tracking recorder after each batch
and resumes from it; at worst it republishes one batch, which deduplicates.
Several runtime replicas each run a relay on a shared ledger, but only the holder of
the relay's lease (:mod:`bus.transport.lease`, job :data:`RELAY_JOB`) publishes; the
others stand by and one takes over within seconds when the holder dies. Should two
ever publish at once (a holder cut off from NATS for a lease), they publish the same
ids, JetStream keeps the first of each, and the tracking table keeps the furthest
position.

No one event can stop the relay: one it can never publish (larger than the server's
``max_payload``, refused by the stream, unreadable) is quarantined with an alert and an
``EventQuarantined`` event in its workflow, and the events after it flow on. A
quarantined handoff would leave its workflow waiting for an agent that never gets it, so
the runtime's ``after_quarantine`` decides, in the same command, what happens instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from eventsourcing.persistence import IntegrityError, Notification, Tracking, TrackingRecorder
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError
from nats.js.errors import APIError, BadRequestError

from bus.ledger.scan import EnvelopeReader
from bus.ledger.store import Ledger
from bus.ledger.workflow import Workflow
from bus.transport.connection import InboxConfig, ensure_inbox_consumer
from bus.transport.publishing import BulkPublisher, takes_no_batches
from bus.transport.subjects import Subjects
from handoff_schemas import EventEnvelope, encode

log = logging.getLogger(__name__)

DUPLICATE_IN_PROCESS = 10158
"""JetStream's ``JSStreamDuplicateMessageConflict`` (HTTP-like code 409): a message with this
``Nats-Msg-Id`` is being stored right now, from another relay replica's publish."""


def is_duplicate_in_process(error: APIError) -> bool:
    """Whether a publish failed only because the same message id is already being stored."""
    return error.err_code == DUPLICATE_IN_PROCESS or (
        error.code == 409 and "duplicate" in (error.description or "").lower()
    )


def outcome(error: BaseException | None) -> BaseException | None:
    """Why a publish failed, or None; another replica storing the same id is success.

    Relay replicas of one ledger publish the same ids. A cluster answers the second of two
    simultaneous publishes with 409 "duplicate message id is in process": the message is
    being stored by the first, which is what this publish wanted (a later republish, the
    usual case, is acknowledged as a duplicate without error).
    """
    if isinstance(error, APIError) and is_duplicate_in_process(error):
        return None
    return error


async def publish_all(
    publisher: BulkPublisher, messages: list[Message]
) -> list[BaseException | None]:
    """Publish every message, in order on one connection, and wait for their
    acknowledgements together; each result is None (stored, or being stored by another
    replica) or why not. No acknowledgement within :data:`ACK_TIMEOUT` fails the call."""
    sent = [(subject, payload, headers) for subject, headers, payload in messages]
    return [outcome(error) for error in await publisher.publish_all(sent, ACK_TIMEOUT)]


async def publish_batched(
    publisher: BulkPublisher,
    messages: list[Message],
    stream_of: Callable[[str], str],
    singly: set[str],
) -> list[BaseException | None]:
    """:func:`publish_all`, with each stream's messages sent as atomic batches when there are
    :data:`ATOMIC_FROM` or more: one write to disk for a batch instead of one fsync per
    message.

    A batch the stream refuses as a whole is sent again message by message, each with its
    own outcome: a republish after a crash (its ids are duplicates, which an atomic batch
    may not hold), a message the server will never take (quarantined). A stream that takes
    no atomic batches at all (set up without ``allow_atomic``, or a server before 2.12,
    which stores a batch's messages singly and acknowledges only the last) joins
    ``singly``, whose streams get their messages one by one with no batch tried first.
    Streams' batches go at once; each keeps its order.
    """
    by_stream: dict[str, list[int]] = {}
    for index, (subject, _, _) in enumerate(messages):
        by_stream.setdefault(stream_of(subject), []).append(index)
    results: list[BaseException | None] = [None] * len(messages)

    async def send(stream: str, indices: list[int]) -> None:
        for start in range(0, len(indices), ATOMIC_BATCH):
            chunk = indices[start : start + ATOMIC_BATCH]
            batch = [(messages[i][0], messages[i][2], messages[i][1]) for i in chunk]
            if len(batch) >= ATOMIC_FROM and stream not in singly:
                refused = await publisher.publish_atomic(batch, ACK_TIMEOUT)
                if refused is None:
                    continue
                if takes_no_batches(refused):
                    singly.add(stream)
                    log.warning(
                        "%s takes no atomic batches (%s): publishing one by one; "
                        "`claimcheck init` allows them on the deployment's streams",
                        stream,
                        refused,
                    )
            alone = await publish_all(publisher, [messages[i] for i in chunk])
            for index, result in zip(chunk, alone, strict=True):
                results[index] = result

    await asyncio.gather(*(send(stream, indices) for stream, indices in by_stream.items()))
    return results


TRACKING_NAME = "relay"
RELAY_JOB = "relay"
"""The relay's lease key: one replica publishes at a time."""

AfterQuarantine = Callable[[Workflow, str, dict[str, Any], str], None]
"""Called in the command that records a quarantine, with the workflow, the quarantined
event's type, its data (empty when unreadable) and the reason: the runtime decides there
what the workflow does next."""

DELIVERIES = ("HandoffSent", "WorkflowResumed")
"""Events whose publish delivers a handoff to an agent's inbox."""

ATOMIC_BATCH = 1000
"""Messages in one atomic batch at most: nats-server's default ceiling (``batch.max_msgs``)."""
ATOMIC_FROM = 16
"""Messages for one stream from which they go as an atomic batch rather than pipelined.
An atomic batch costs nats-server about 2 ms of CPU and takes 3.2 ms to acknowledge
whatever its size (2.15, ``sync_interval: always``); one pipelined message 0.2 ms and
0.5 ms. At 16 messages the two cost the same, and the batch is acknowledged sooner."""

ACK_TIMEOUT = 10.0
"""Seconds a batch's publishes may wait for JetStream's acknowledgements: then the batch is
published again (the ids make the repeats duplicates)."""

Message = tuple[str, dict[str, str], bytes]
"""A subject, its headers (``Nats-Msg-Id`` among them) and a payload."""

Readable = tuple[Notification, EventEnvelope, list[Message]]
"""An event the relay could read: its notification, its envelope and what it publishes."""

UNPUBLISHABLE = (MaxPayloadError, BadRequestError)
"""What publishing again will never cure (too large for the server, refused by the stream);
anything else from NATS is an outage, waited out by publishing the batch again."""


class Relay:
    def __init__(
        self,
        ledger: Ledger,
        nc: Client,
        subjects: Subjects,
        poll_interval: float = 1.0,
        inbox: InboxConfig | None = None,
        after_quarantine: AfterQuarantine | None = None,
    ) -> None:
        self.inbox = inbox or InboxConfig()
        self.after_quarantine = after_quarantine
        self._inboxes: set[str] = set()  # agents whose inbox consumer is known to exist
        self._singly: set[str] = set()  # streams that take no atomic batches
        self.ledger = ledger
        self.reader = EnvelopeReader(ledger)
        self.js = nc.jetstream()
        self.publisher = BulkPublisher(nc)
        self.subjects = subjects
        self.poll_interval = poll_interval
        self.tracking: TrackingRecorder = ledger.factory.tracking_recorder()
        self._wake = asyncio.Event()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay")

    async def close(self) -> None:
        """Wait for a ledger read in flight: the ledger must not close under it."""
        await asyncio.to_thread(self._thread.shutdown, True)

    def wake(self) -> None:
        """Called after a local commit; other replicas' commits are found by polling."""
        self._wake.set()

    async def run(self) -> None:
        position = await self._in_thread(self.tracking.max_tracking_id, TRACKING_NAME) or 0
        log.info("relay resumes after position %d", position)
        while True:
            self._wake.clear()
            batch = await self._in_thread(self.ledger.notifications, position)
            if batch:
                try:
                    position = await self.publish(batch)
                except (NatsError, TimeoutError) as error:
                    # NATS is away (restarting?): publish the batch again; duplicates are dropped.
                    log.warning("relay could not publish (%s); retrying", error)
                    await asyncio.sleep(0.5)
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            except TimeoutError:
                pass

    async def publish(self, batch: list[Notification]) -> int:
        """Publish a batch; return the position of its last notification.

        The publishes are pipelined (all sent, then all acknowledgements awaited, in ledger
        order on one connection): first what each event caused, then the events themselves, so
        whoever sees an event finds what it caused even if the relay dies in between.
        """
        readable: list[Readable] = []
        for notification in batch:
            read = await self.read(notification)
            if read is not None:
                readable.append((notification, *read))
        await self.ensure_inboxes(readable)
        caused = await self._publish_part(readable, slice(None, -1))
        await self._publish_part(caused, slice(-1, None))
        last = batch[-1].id
        try:
            await self._in_thread(self.tracking.insert_tracking, Tracking(TRACKING_NAME, last))
        except IntegrityError:
            # Another replica's relay tracked this far (or further) first; what we
            # published again was dropped by the duplicate window.
            return await self._in_thread(self.tracking.max_tracking_id, TRACKING_NAME) or last
        return last

    async def read(self, notification: Notification) -> tuple[EventEnvelope, list[Message]] | None:
        """The event and what it publishes, or None once it is quarantined as unreadable."""
        try:
            envelope = self.reader.envelope(notification)
            return envelope, self.messages(envelope)
        except Exception as error:  # a stored event today's code cannot read
            await self.quarantine(notification, notification.topic, f"unreadable: {error!r}")
            return None

    async def _publish_part(self, readable: list[Readable], part: slice) -> list[Readable]:
        """Publish ``part`` of each event's messages; return the events not quarantined.

        No single event may stop the relay: one whose message the server refuses for good
        is quarantined. Any other failure (NATS away) fails the batch, published again.
        """
        sends = [
            (index, message) for index, (_, _, ms) in enumerate(readable) for message in ms[part]
        ]
        results = await publish_batched(
            self.publisher, [message for _, message in sends], self.subjects.kind_of, self._singly
        )
        refused: dict[int, BaseException] = {}
        for (index, _), result in zip(sends, results, strict=True):
            if isinstance(result, UNPUBLISHABLE):
                refused.setdefault(index, result)
            elif isinstance(result, BaseException):
                raise result
        for index, error in refused.items():
            notification, envelope, messages = readable[index]
            size = max(len(payload) for _, _, payload in messages)
            reason = f"{type(error).__name__}: {error}"
            await self.quarantine(notification, envelope.type, reason, size, envelope.data)
        return [item for index, item in enumerate(readable) if index not in refused]

    async def ensure_inboxes(self, readable: list[Readable]) -> None:
        """Each receiving agent's inbox consumer, created before its first handoff: agents
        may not create consumers, so the runtime makes each one when it first needs it."""
        for _, envelope, _ in readable:
            agent = envelope.data["handoff"]["to"] if envelope.type in DELIVERIES else None
            if agent is not None and agent not in self._inboxes:
                await ensure_inbox_consumer(self.js, self.subjects, agent, self.inbox)
                self._inboxes.add(agent)

    async def quarantine(
        self,
        notification: Notification,
        event_type: str,
        reason: str,
        size: int = 0,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Alert, and record the quarantine as an event of the workflow's own."""
        workflow_id = str(notification.originator_id)
        log.error(
            "ALERT: relay quarantined the event at position %d (%s, %d bytes) of workflow %s: %s",
            notification.id,
            event_type,
            size,
            workflow_id,
            reason,
        )
        if event_type == "EventQuarantined":
            return  # never a quarantine of a quarantine: the log line above is the record

        def record(workflow: Workflow) -> bool:
            recorded = workflow.quarantine_event(
                notification.id, notification.originator_version, event_type, reason[:500], size
            )
            if recorded and self.after_quarantine is not None:
                self.after_quarantine(workflow, event_type, data or {}, reason[:500])
            return recorded

        try:
            await self._in_thread(self.ledger.command_detached, workflow_id, record)
        except Exception as error:
            log.error(
                "ALERT: the quarantine of position %d was not recorded: %r", notification.id, error
            )

    def messages(self, envelope: EventEnvelope) -> list[Message]:
        """(subject, headers, payload) for everything one event publishes, the event last.

        ``Nats-Msg-Id`` makes a republish a duplicate; a handoff also carries the
        ``traceparent`` it was sent with, so the next agent joins the same trace.
        """
        workflow_id, data, position = envelope.workflow_id, envelope.data, envelope.position

        def ids(msg_id: str, traceparent: str = "") -> dict[str, str]:
            return {"Nats-Msg-Id": msg_id, **({"traceparent": traceparent} if traceparent else {})}

        out = [
            (
                self.subjects.event(workflow_id, envelope.type),
                ids(f"event-{position}"),
                encode(envelope),
            )
        ]
        match envelope.type:
            case "EvidenceRecorded":
                evidence = data["evidence"]
                out.append(
                    (
                        self.subjects.evidence(workflow_id),
                        ids(f"evidence-{evidence['auditId']}"),
                        encode(evidence),
                    )
                )
            case "HandoffSent":
                handoff = data["handoff"]
                out.append(
                    (
                        self.subjects.inbox(handoff["to"]),
                        ids(handoff["handoffId"], data.get("traceparent", "")),
                        encode(handoff),
                    )
                )
            case "WorkflowResumed":
                handoff = data["handoff"]
                msg_id = f"{handoff['handoffId']}-resumed-{data['escalation_id']}"
                out.append(
                    (
                        self.subjects.inbox(handoff["to"]),
                        ids(msg_id, data.get("traceparent", "")),
                        encode(handoff),
                    )
                )
            case "HandoffDeadLettered":
                handoff = data["handoff"]
                out.append(
                    (
                        self.subjects.dead_letter(handoff["to"]),
                        ids(f"deadletter-{handoff['handoffId']}"),
                        encode(envelope),
                    )
                )
            case "EscalationRaised" | "EscalationResolved":
                out.append(
                    (
                        self.subjects.escalation(workflow_id),
                        ids(f"escalation-{position}"),
                        encode(envelope),
                    )
                )
        # The event last: whoever sees it on the events stream (``watch``, the CLI) then
        # finds what it caused on the other streams (an escalation, an inbox message), even
        # when the relay is killed between the two publishes.
        return [*out[1:], out[0]]

    async def _in_thread(self, function, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)
