"""The messages agents, the runtime and auditors exchange.

A handoff passes references, never payloads: ``artifactId`` names a stored,
content-addressed artifact and ``evidenceId`` names the evidence that backs the
sender's status. That is the claim-check pattern the project is named after.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from handoff_schemas.base import WireStruct
from handoff_schemas.limits import MAX_ITEMS, Id

Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
"""An agent, task or tool name: also a NATS subject token, so no dots or spaces."""

ArtifactId = Annotated[str, msgspec.Meta(pattern=r"^sha256-[0-9a-f]{64}$")]
"""A content address: the SHA-256 of the artifact's bytes."""

HandoffStatus = Literal["new", "completed", "verified", "needs_review", "failed"]
EvidenceStatus = Literal["succeeded", "failed", "denied"]
PermissionOutcome = Literal["allowed", "denied", "approved"]
"""``approved``: a human granted what the policy did not allow on its own."""
Verdict = Literal["verified", "unverified", "contradicted"]


class Handoff(WireStruct):
    """Work passed from one agent (or a user) to another, by reference."""

    handoff_id: str
    workflow_id: str
    from_: str
    to: Name
    task: Name
    artifact_id: ArtifactId
    status: HandoffStatus
    scope: str
    created_at: datetime
    evidence_id: str | None = None


class Evidence(WireStruct):
    """What the runtime saw happen: an action, the permission, and the outcome.

    Only the runtime writes evidence. ``refs`` holds the tool's own references
    (``messageId`` for an email, ``ticketId`` for a ticket) so an auditor can
    check the side effect in the real system.
    """

    audit_id: str
    workflow_id: str
    actor: str
    action: str
    resource: str
    permission: PermissionOutcome
    rule: str
    status: EvidenceStatus
    timestamp: datetime
    prev_hash: str
    hash: str
    tool: str | None = None
    refs: dict[str, str] = {}
    signature: str = ""
    """The runtime's Ed25519 signature of ``hash`` (empty in records made before signing)."""


def evidence_hash(record: dict[str, Any]) -> str:
    """The chain hash of an evidence record, as decoded from the wire.

    SHA-256 over the record's canonical JSON (keys sorted) without its own
    ``hash`` and ``signature`` fields; ``prevHash`` is included, which chains each
    record to the one before it in the same workflow. Anyone holding the evidence
    stream can recompute it.
    """
    body = {key: value for key, value in record.items() if key not in ("hash", "signature")}
    return hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()


class ClaimAssertion(WireStruct):
    """What an agent asserts, before the runtime has judged it."""

    statement: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    asserts: EvidenceStatus
    evidence_ids: Annotated[list[Id], msgspec.Meta(max_length=MAX_ITEMS)] = []


class Claim(WireStruct):
    """A recorded assertion and the runtime's verdict on it."""

    claim_id: str
    workflow_id: str
    agent: str
    statement: str
    asserts: EvidenceStatus
    evidence_ids: list[str]
    verdict: Verdict
    reason: str


class PendingAction(WireStruct):
    """The tool call an escalation holds back until a human decides."""

    tool: str
    resource: str
    payload: dict[str, Any]


class Escalation(WireStruct):
    """A question for a human, on ``<prefix>.escalation.<workflow>``."""

    escalation_id: str
    workflow_id: str
    kind: str
    reason: str
    agent: str
    step_key: str
    raised_at: datetime
    action: PendingAction | None = None
    claim_id: str | None = None


class EscalationResolution(WireStruct):
    escalation_id: str
    workflow_id: str
    decision: Literal["approve", "deny"]
    approver: str
    reason: str
    resolved_at: datetime


class EventEnvelope(WireStruct):
    """One ledger event as published on ``<prefix>.events.<workflow>.<type>``.

    ``position`` is the event's place in the ledger's total order; it is also
    the stream's ``Nats-Msg-Id``, so the relay can republish without duplicates.
    It is ``None`` for events read from one aggregate's history.
    """

    workflow_id: str
    version: int
    type: str
    timestamp: datetime
    data: dict[str, Any]
    position: int | None = None
