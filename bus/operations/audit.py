"""``claimcheck audit follow``: a read-only auditor of the evidence stream.

It connects with auditor credentials, which may publish nothing; it reads the
push feeds the runtime prepared (``<prefix>.audit.evidence`` and
``<prefix>.audit.claims``), checks each workflow's evidence chain as records
arrive (with the runtime's public key, accepting only records it signed), and
reports every claim the runtime did not verify. With the stack down, the same
checks run over the ledger's events. A message it cannot read is reported as
``unreadable`` and skipped: hostile bytes on a feed never stop the auditor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from bus.ledger import GENESIS_HASH
from bus.transport.signing import Verifier
from bus.transport.subjects import Subjects
from handoff_schemas import (
    Claim,
    EventEnvelope,
    Evidence,
    SchemaError,
    convert,
    decode,
    evidence_hash,
)


@dataclass
class ChainWatcher:
    """The last hash seen per workflow: enough to check each new record's link."""

    last_hash: dict[str, str] = field(default_factory=dict)
    verifier: Verifier | None = None
    """The runtime's public key: with it, only records the runtime signed are accepted."""

    def check(self, record: dict[str, Any]) -> str | None:
        """The problem with this record, or None; a good record extends its chain."""
        workflow_id = record.get("workflowId", "?")
        where = f"evidence {record.get('auditId')} in workflow {workflow_id}"
        if evidence_hash(record) != record.get("hash"):
            return f"{where}: its fields do not match its hash"
        if self.verifier is not None and not self.verifier.verify(
            str(record["hash"]).encode(), record.get("signature")
        ):
            return f"{where}: it is not signed by the runtime's key"
        if record.get("prevHash") != self.last_hash.get(workflow_id, GENESIS_HASH):
            return f"{where}: its prevHash does not link to the previous record"
        self.last_hash[workflow_id] = record["hash"]
        return None


@dataclass(frozen=True)
class Finding:
    kind: str  # "evidence", "break", "claim" or "unreadable"
    workflow_id: str
    text: str
    record: dict[str, Any]


async def follow(
    nc: Client,
    subjects: Subjects,
    report: Callable[[Finding], bool],
    idle_timeout: float | None = None,
    verifier: Verifier | None = None,
) -> None:
    """Feed findings to ``report`` until it returns False or ``idle_timeout`` passes quietly."""
    inbox: asyncio.Queue[Msg] = asyncio.Queue()
    for feed in ("evidence", "claims"):
        await nc.subscribe(subjects.audit(feed), cb=inbox.put)
    chain = ChainWatcher(verifier=verifier)
    while True:
        try:
            msg = await asyncio.wait_for(inbox.get(), idle_timeout)
        except TimeoutError:
            return
        if not report(classify(msg, chain, subjects)):
            return


def classify(msg: Msg, chain: ChainWatcher, subjects: Subjects) -> Finding:
    """What one feed message is; one that cannot be read is an ``unreadable`` finding."""
    try:
        return read_feed_message(msg.subject, msg.data, chain, subjects)
    except Exception as error:  # hostile bytes must not stop the auditor
        text = f"skipped an unreadable message on {msg.subject}: {type(error).__name__}: {error}"
        return Finding("unreadable", "?", text[:500], {})


def read_feed_message(
    subject: str, data: bytes, chain: ChainWatcher, subjects: Subjects
) -> Finding:
    """Classify one message; raises on anything that is not a well-formed record."""
    # A push consumer delivers each message under its original subject.
    if subject.startswith(f"{subjects.prefix}.events."):
        event = decode(data, EventEnvelope)
        return claim_finding(event.workflow_id, event.data.get("claim"))
    document = msgspec.json.decode(data)
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    return evidence_finding(document, chain)


def from_ledger(
    events: Iterable[EventEnvelope],
    report: Callable[[Finding], bool],
    verifier: Verifier | None = None,
) -> None:
    """The same findings, from the ledger's events: the audit when the stack is down."""
    chain = ChainWatcher(verifier=verifier)
    for event in events:
        if event.type == "EvidenceRecorded":
            finding = evidence_finding(event.data["evidence"], chain)
        elif event.type == "ClaimMade":
            finding = claim_finding(event.workflow_id, event.data["claim"])
        else:
            continue
        if not report(finding):
            return


def claim_finding(workflow_id: str, record: object) -> Finding:
    claim = msgspec.to_builtins(convert(record, Claim))  # raises on a malformed claim
    text = (
        f"claim {claim['claimId']} by {claim['agent']}: {claim['statement']!r} is "
        f"{claim['verdict']}: {claim['reason']}"
    )
    return Finding("claim", workflow_id, text, claim)


def evidence_finding(record: dict[str, Any], chain: ChainWatcher) -> Finding:
    """A whole, signed, linked record is ``evidence``; anything else is a ``break``."""
    workflow_id = str(record.get("workflowId", "?"))
    try:  # the shape first: only a whole record may extend a chain
        evidence = convert(record, Evidence)
    except SchemaError as error:
        where = f"evidence {record.get('auditId')} in workflow {workflow_id}"
        return Finding("break", workflow_id, f"{where}: not an evidence record: {error}", record)
    problem = chain.check(record)
    if problem:
        return Finding("break", evidence.workflow_id, problem, record)
    text = (
        f"evidence {evidence.audit_id}: {evidence.actor} {evidence.action} "
        f"{evidence.resource} {evidence.status} ({evidence.permission})"
    )
    return Finding("evidence", evidence.workflow_id, text, record)
