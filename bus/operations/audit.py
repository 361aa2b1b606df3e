"""``claimcheck audit follow``: a read-only auditor of the evidence stream.

It connects with auditor credentials, which may publish nothing; it reads the
push feeds the runtime prepared (``<prefix>.audit.evidence`` and
``<prefix>.audit.claims``), checks each workflow's evidence chain as records
arrive, and reports every claim the runtime did not verify. With the stack down,
the same checks run over the ledger's events.
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
from bus.transport.subjects import Subjects
from handoff_schemas import EventEnvelope, evidence_hash


@dataclass
class ChainWatcher:
    """The last hash seen per workflow: enough to check each new record's link."""

    last_hash: dict[str, str] = field(default_factory=dict)

    def check(self, record: dict[str, Any]) -> str | None:
        """The problem with this record, or None; a good record extends its chain."""
        workflow_id = record.get("workflowId", "?")
        where = f"evidence {record.get('auditId')} in workflow {workflow_id}"
        if evidence_hash(record) != record.get("hash"):
            return f"{where}: its fields do not match its hash"
        if record.get("prevHash") != self.last_hash.get(workflow_id, GENESIS_HASH):
            return f"{where}: its prevHash does not link to the previous record"
        self.last_hash[workflow_id] = record["hash"]
        return None


@dataclass(frozen=True)
class Finding:
    kind: str  # "evidence", "break" or "claim"
    workflow_id: str
    text: str
    record: dict[str, Any]


async def follow(
    nc: Client,
    subjects: Subjects,
    report: Callable[[Finding], bool],
    idle_timeout: float | None = None,
) -> None:
    """Feed findings to ``report`` until it returns False or ``idle_timeout`` passes quietly."""
    inbox: asyncio.Queue[Msg] = asyncio.Queue()
    for feed in ("evidence", "claims"):
        await nc.subscribe(subjects.audit(feed), cb=inbox.put)
    chain = ChainWatcher()
    while True:
        try:
            msg = await asyncio.wait_for(inbox.get(), idle_timeout)
        except TimeoutError:
            return
        if not report(classify(msg, chain, subjects)):
            return


def classify(msg: Msg, chain: ChainWatcher, subjects: Subjects) -> Finding:
    document = msgspec.json.decode(msg.data)
    # A push consumer delivers each message under its original subject.
    if msg.subject.startswith(f"{subjects.prefix}.events."):
        return claim_finding(document["workflowId"], document["data"]["claim"])
    return evidence_finding(document, chain)


def from_ledger(events: Iterable[EventEnvelope], report: Callable[[Finding], bool]) -> None:
    """The same findings, from the ledger's events: the audit when the stack is down."""
    chain = ChainWatcher()
    for event in events:
        if event.type == "EvidenceRecorded":
            finding = evidence_finding(event.data["evidence"], chain)
        elif event.type == "ClaimMade":
            finding = claim_finding(event.workflow_id, event.data["claim"])
        else:
            continue
        if not report(finding):
            return


def claim_finding(workflow_id: str, claim: dict[str, Any]) -> Finding:
    text = (
        f"claim {claim['claimId']} by {claim['agent']}: {claim['statement']!r} is "
        f"{claim['verdict']}: {claim['reason']}"
    )
    return Finding("claim", workflow_id, text, claim)


def evidence_finding(record: dict[str, Any], chain: ChainWatcher) -> Finding:
    problem = chain.check(record)
    if problem:
        return Finding("break", record.get("workflowId", "?"), problem, record)
    text = (
        f"evidence {record['auditId']}: {record['actor']} {record['action']} "
        f"{record['resource']} {record['status']} ({record['permission']})"
    )
    return Finding("evidence", record["workflowId"], text, record)
