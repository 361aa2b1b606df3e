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
ItemVerdict = Literal["verified", "unsupported", "contradicted"]
"""An item's verdict: it matches its evidence; nothing backs it; the evidence says otherwise."""
Verdict = Literal["verified", "unsupported", "contradicted", "partial", "unverified"]
"""A claim's verdict. ``partial``: every item verified, but the task's definition of done is
not met. ``unverified`` is what claims recorded before structured claims were called when
they cited nothing; it is read, never given."""
DONE_STATUSES = frozenset({"completed", "verified"})
"""Handoff statuses that say work was done: such a handoff must rest on a verified claim."""


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
    claim_id: str | None = None
    """For a ``completed`` or ``verified`` handoff: the sender's verified claim it rests on."""
    claim_items: list[ClaimItem] = []
    """That claim's items, so the receiver knows exactly what was done and checked."""


class Evidence(WireStruct):
    """What the runtime saw happen: an action, the permission, and the outcome.

    Only the runtime writes evidence. ``refs`` holds the tool's own references
    (``messageId`` for an email, ``ticketId`` for a ticket) so an auditor can
    check the side effect in the real system. ``facts`` holds the fields of the
    tool's input and output that its catalogue entry declares to be facts (the
    recipient, a ticket's severity): what a claim's asserted facts are checked
    against. ``stepKey`` names the step that produced it, so a verdict can tell a
    step's latest outcome from one it superseded. Both are in the hash; records
    written before they existed lack them and still verify.
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
    facts: dict[str, Any] = {}
    step_key: str = ""
    artifacts: dict[str, str] = {}
    """``input`` / ``output``: content addresses of the call's full payload and tool result."""
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


Fact = str | int | float | bool | None


class ClaimItem(WireStruct):
    """One thing an agent says was done, and the one evidence record it rests on.

    ``action`` is the tool, ``target`` the resource the runtime read from the call
    (``mailto:ops@acme.example``, ``ticket:contoso``), ``facts`` what the agent asserts
    of the call's declared facts (``{"severity": "high"}``); each must equal what the
    runtime recorded in the evidence.
    """

    action: Name
    target: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    status: EvidenceStatus
    evidence_id: Id
    facts: Annotated[dict[str, Fact], msgspec.Meta(max_length=MAX_ITEMS)] = {}


class CheckedItem(ClaimItem):
    """A claim item with the runtime's verdict on it and the reason."""

    verdict: ItemVerdict = "unsupported"
    reason: str = ""


class ClaimAssertion(WireStruct):
    """What an agent asserts, before the runtime has judged it.

    Only ``items`` are checked. ``remarks`` is free text: it is kept and shown, marked
    as not checked, and never becomes the claim's statement.
    """

    items: Annotated[list[ClaimItem], msgspec.Meta(max_length=MAX_ITEMS)] = []
    remarks: Annotated[str, msgspec.Meta(max_length=4096)] = ""


class Claim(WireStruct):
    """A recorded assertion and the runtime's verdict on it.

    ``statement`` is generated from the checked items, so it cannot say more than was
    checked. ``missing`` lists what the task's definition of done still needs (a
    ``partial`` verdict). ``handoffIds`` are the handlings the claim speaks for.
    Claims recorded before structured claims have ``asserts`` and ``evidenceIds`` only.
    """

    claim_id: str
    workflow_id: str
    agent: str
    statement: str
    verdict: Verdict
    reason: str
    asserts: EvidenceStatus | None = None
    evidence_ids: list[str] = []
    items: list[CheckedItem] = []
    remarks: str = ""
    missing: list[str] = []
    handoff_ids: list[str] = []


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
    """A human's answer; ``correctedAction`` is what an approval with changes ran instead of
    the held action (it passed the policy as corrected)."""

    escalation_id: str
    workflow_id: str
    decision: Literal["approve", "deny"]
    approver: str
    reason: str
    resolved_at: datetime
    corrected_action: PendingAction | None = None


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
