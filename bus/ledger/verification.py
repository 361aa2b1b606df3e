"""``claimcheck verify``: is the record intact?

Two independent checks, reported at the first record that breaks:

- the evidence chain in the ledger: each record's hash must match its fields, its
  signature must be the runtime's (when its public key is known), and its
  ``prevHash`` the hash of the record before it in the workflow;
- the ledger against the events stream: every event the relay published must
  still be in the ledger unchanged, and every ledger event must have been
  published. An edit to a stored event (in SQLite or PostgreSQL) shows here
  even when it touches no evidence.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client
from nats.js.api import DeliverPolicy

from bus.ledger import GENESIS_HASH
from bus.transport.signing import Verifier
from bus.transport.subjects import Subjects
from handoff_schemas import EventEnvelope, SchemaError, decode, evidence_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Break:
    workflow_id: str
    version: int
    event_type: str
    record: str
    problem: str

    def __str__(self) -> str:
        return (
            f"workflow {self.workflow_id}, event {self.version} ({self.event_type}), "
            f"{self.record}: {self.problem}"
        )


def check_chain(history: Sequence[EventEnvelope], verifier: Verifier | None = None) -> Break | None:
    """The first evidence record whose hash, signature or link is wrong, if any.

    With the runtime's public key (``verifier``), a record must carry the runtime's
    signature of its hash: one re-hashed by someone who can write the ledger is not.
    """
    previous = GENESIS_HASH
    for event in history:
        if event.type != "EvidenceRecorded":
            continue
        record = event.data["evidence"]
        where = f"evidence {record.get('auditId')}"
        if evidence_hash(record) != record.get("hash"):
            return Break(
                event.workflow_id,
                event.version,
                event.type,
                where,
                "its fields do not match its hash (changed after it was recorded)",
            )
        if verifier is not None and not verifier.verify(
            str(record.get("hash")).encode(), record.get("signature")
        ):
            return Break(
                event.workflow_id,
                event.version,
                event.type,
                where,
                "it is not signed by the runtime's key",
            )
        if record.get("prevHash") != previous:
            return Break(
                event.workflow_id,
                event.version,
                event.type,
                where,
                "its prevHash does not link to the record before it",
            )
        previous = record["hash"]
    return None


def check_against_stream(
    history: Sequence[EventEnvelope], published: Sequence[EventEnvelope]
) -> Break | None:
    """The first event where the ledger and the events stream disagree, if any."""
    copies = {event.version: event for event in published}
    last_published = max(copies, default=0)
    quarantined = {
        event.data.get("quarantined_version")
        for event in history
        if event.type == "EventQuarantined"
    }
    for event in history:
        copy = copies.get(event.version)
        if copy is None and event.version in quarantined:
            continue  # the relay could not publish it, and recorded so
        if copy is None and event.version > last_published:
            break  # the relay has not published the newest events yet: lag, not tampering
        if copy is None:
            return Break(
                event.workflow_id,
                event.version,
                event.type,
                "the event",
                "it is in the ledger but was never published",
            )
        if (copy.type, canonical(copy.data)) != (event.type, canonical(event.data)):
            changed = sorted(
                key
                for key in {*copy.data, *event.data}
                if canonical(copy.data.get(key)) != canonical(event.data.get(key))
            )
            return Break(
                event.workflow_id,
                event.version,
                event.type,
                "the event",
                f"the ledger differs from the copy published at position {copy.position}"
                f" (fields: {', '.join(changed) or 'type'})",
            )
    if len(copies) > len(history):
        extra = min(set(copies) - {event.version for event in history})
        return Break(
            copies[extra].workflow_id,
            extra,
            copies[extra].type,
            "the event",
            "it was published but is missing from the ledger",
        )
    return None


def canonical(value: object) -> bytes:
    return msgspec.json.encode(value, order="sorted")


def first_break(
    history: Sequence[EventEnvelope],
    published: Sequence[EventEnvelope] | None,
    verifier: Verifier | None = None,
) -> Break | None:
    found = [
        b
        for b in (
            check_chain(history, verifier),
            check_against_stream(history, published) if published is not None else None,
        )
        if b
    ]
    return min(found, key=lambda b: b.version, default=None)


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


async def published_events(
    nc: Client, subjects: Subjects, workflow_id: str, unreadable: list[str] | None = None
) -> list[EventEnvelope]:
    """Every copy of a workflow's events on the events stream (``unreadable`` gets the rest)."""
    subscription = await nc.jetstream().subscribe(
        subjects.event(workflow_id, ">"),
        stream=subjects.stream("events"),
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    events: list[EventEnvelope] = []
    try:
        while True:
            try:
                msg = await subscription.next_msg(timeout=1.0)
            except TimeoutError:
                return events
            event = read_published(msg.data, unreadable)
            if event is not None and event.workflow_id == workflow_id:
                events.append(event)
            if msg.metadata.num_pending == 0:
                return events
    finally:
        await subscription.unsubscribe()
