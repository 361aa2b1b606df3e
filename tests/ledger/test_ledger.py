"""The ledger's invariants, on a real SQLite file and on the local PostgreSQL."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from bus.ledger import GENESIS_HASH, Ledger, LedgerError, UnknownWorkflow, Workflow
from bus.ledger.errors import InvalidHandoff, NotAParticipant, WorkflowClosed
from handoff_schemas import ClaimAssertion, ClaimItem, evidence_hash

ARTIFACT = "sha256-" + "0" * 64


def start(ledger: Ledger) -> str:
    workflow = ledger.start(
        ledger.starting(
            "triage_complaint",
            "triage",
            ARTIFACT,
            "test",
            "cli",
            1.0,
            {"handoffId": "ho-1", "to": "triage", "status": "new"},
        )
    )
    return str(workflow.id)


def allowed_execution(workflow: Workflow, step: str = "s1", status: str = "succeeded") -> Any:
    workflow.request_action("triage", "create_ticket", "ticket:x", {}, step)
    workflow.decide_permission("triage", "create_ticket", "ticket:x", "allowed", "r", "ok", step)
    workflow.execute_tool("triage", "create_ticket", status, 1.0, 1, 0.0, step)
    return workflow.add_evidence(
        actor="triage",
        action="create_ticket",
        resource="ticket:x",
        permission="allowed",
        rule="r",
        tool="create_ticket",
        status=status,
    )


def test_events_are_recorded_in_order(ledger: Ledger) -> None:
    workflow_id = start(ledger)
    ledger.command(workflow_id, allowed_execution)
    types = [event.type for event in ledger.history(workflow_id)]
    assert types == [
        "WorkflowStarted",
        "HandoffSent",
        "ActionRequested",
        "PermissionDecided",
        "ToolExecuted",
        "EvidenceRecorded",
    ]
    assert [event.version for event in ledger.history(workflow_id)] == list(range(1, 7))


def test_a_tool_execution_needs_an_allowing_decision(ledger: Ledger) -> None:
    workflow_id = start(ledger)

    def denied_then_executed(workflow: Workflow) -> None:
        workflow.decide_permission("triage", "send_email", "mailto:x", "denied", "r", "no", "s1")
        workflow.execute_tool("triage", "send_email", "succeeded", 1.0, 1, 0.0, "s1")

    with pytest.raises(LedgerError, match="no allowing permission decision"):
        ledger.command(workflow_id, denied_then_executed)
    with pytest.raises(LedgerError, match="no allowing permission decision"):
        ledger.command(
            workflow_id, lambda wf: wf.execute_tool("triage", "x", "succeeded", 1, 1, 0.0, "s2")
        )
    assert "ToolExecuted" not in [event.type for event in ledger.history(workflow_id)]


def test_a_closed_workflow_takes_no_more_actions(ledger: Ledger) -> None:
    workflow_id = start(ledger)

    def done(workflow: Workflow) -> None:  # a verified claim closes ho-1: it may complete
        evidence = allowed_execution(workflow, "ho-1/1")
        assertion = ClaimAssertion(items=[ticket_item(evidence.audit_id)])
        claim = workflow.make_claim("triage", "filed", assertion, "ho-1/2")
        workflow.complete("triage", claim.claim_id)

    ledger.command(workflow_id, done)
    with pytest.raises(WorkflowClosed):
        ledger.command(workflow_id, lambda wf: wf.require_open())
    assert ledger.workflow(workflow_id).status == "completed"


def test_only_a_recipient_acts_in_a_workflow(ledger: Ledger) -> None:
    workflow_id = start(ledger)
    ledger.command(workflow_id, lambda wf: wf.require_participant("triage"))
    with pytest.raises(NotAParticipant):
        ledger.command(workflow_id, lambda wf: wf.require_participant("intruder"))


def test_a_completed_step_keeps_its_reply_across_a_restart(ledger_url: str, ledger: Ledger) -> None:
    workflow_id = start(ledger)
    reply = {"ok": True, "result": {"task": "t"}}
    ledger.command(workflow_id, lambda wf: wf.complete_step("ho-1/1", "intent", reply))
    restarted = Ledger.from_url(ledger_url)
    try:
        assert restarted.recorded_reply(restarted.workflow(workflow_id), "ho-1/1") == reply
    finally:
        restarted.close()


def test_evidence_is_hash_chained(ledger: Ledger) -> None:
    workflow_id = start(ledger)
    first = ledger.command(workflow_id, allowed_execution)
    second = ledger.command(workflow_id, lambda wf: allowed_execution(wf, "s2", "failed"))
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    # anyone can recompute a hash from the record as it travels on the wire
    for evidence in (first, second):
        wire = msgspec.json.decode(msgspec.json.encode(evidence))
        assert evidence_hash(wire) == evidence.hash
        assert (
            evidence_hash(
                {**wire, "status": "succeeded" if evidence.status == "failed" else "failed"}
            )
            != evidence.hash
        )
    assert ledger.workflow(workflow_id).evidence[second.audit_id]["hash"] == second.hash


def ticket_item(evidence_id: str, status: str = "succeeded") -> ClaimItem:
    return ClaimItem(
        action="create_ticket", target="ticket:x", status=status, evidence_id=evidence_id
    )


def test_a_verified_handoff_without_a_verified_claim_is_refused_and_recorded(
    ledger: Ledger,
) -> None:
    workflow_id = start(ledger)
    handoff = {
        "handoffId": "ho-2",
        "from": "triage",
        "to": "notifier",
        "status": "verified",
        "evidenceId": "ev-missing",
        "claimId": "claim-missing",
    }
    with pytest.raises(InvalidHandoff, match="rests on no claim"):
        ledger.command(workflow_id, lambda wf: wf.send_handoff(handoff))
    last = ledger.history(workflow_id)[-1]
    assert last.type == "HandoffRejected"
    assert "verified claim" in last.data["reason"]
    assert "ho-2" not in ledger.workflow(workflow_id).handoffs


def test_a_verified_handoff_resting_on_a_verified_claim_is_sent(ledger: Ledger) -> None:
    workflow_id = start(ledger)
    evidence = ledger.command(workflow_id, allowed_execution)
    assertion = ClaimAssertion(items=[ticket_item(evidence.audit_id)])
    claim = ledger.command(
        workflow_id, lambda wf: wf.make_claim("triage", "filed", assertion, "ho-1/9")
    )
    handoff = {
        "handoffId": "ho-2",
        "from": "triage",
        "to": "notifier",
        "status": "verified",
        "evidenceId": evidence.audit_id,
        "claimId": claim.claim_id,
    }
    ledger.command(workflow_id, lambda wf: wf.send_handoff(handoff, step_key="ho-1/10"))
    assert ledger.history(workflow_id)[-1].type == "HandoffSent"


@pytest.mark.parametrize(
    ("asserts", "cite", "verdict"),
    [
        ("succeeded", True, "verified"),
        ("failed", True, "contradicted"),
        ("succeeded", False, "unsupported"),
    ],
)
def test_claims_are_judged_against_evidence(
    ledger: Ledger, asserts: str, cite: bool, verdict: str
) -> None:
    workflow_id = start(ledger)
    evidence = ledger.command(workflow_id, allowed_execution)
    assertion = ClaimAssertion(
        items=[ticket_item(evidence.audit_id, asserts)] if cite else [], remarks="ticket filed"
    )
    claim = ledger.command(workflow_id, lambda wf: wf.make_claim("triage", "done", assertion))
    assert claim.verdict == verdict


def test_an_unknown_workflow_is_an_error(ledger: Ledger) -> None:
    for bad in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        with pytest.raises(UnknownWorkflow):
            ledger.workflow(bad)


def test_a_concurrent_writer_is_retried_not_lost(ledger_url: str, ledger: Ledger) -> None:
    """Two ledgers (two runtime replicas) on one store: the loser of a race reloads and retries."""
    workflow_id = start(ledger)
    other = Ledger.from_url(ledger_url)
    calls = []

    def change(workflow: Workflow) -> None:
        calls.append(workflow.version)
        if len(calls) == 1:  # the other replica commits while this one is deciding
            other.command(workflow_id, lambda wf: wf.note_audit("triage", "first", {}, "a1"))
        workflow.note_audit("triage", "second", {}, "a2")

    try:
        ledger.command(workflow_id, change)
    finally:
        other.close()
    notes = [
        event.data["note"] for event in ledger.history(workflow_id) if event.type == "AuditNoted"
    ]
    assert notes == ["first", "second"]
    assert len(calls) == 2


@pytest.mark.parametrize("batched", [False, True])
def test_a_refusal_is_decided_on_what_another_replica_stored(
    ledger_url: str, ledger: Ledger, batched: bool
) -> None:
    """A refusal that records nothing meets no version check on save: decided on a cached
    copy another replica moved on from, it would stand. The ledger decides it again on the
    stored state instead."""
    workflow_id = start(ledger)
    ledger.read(workflow_id, lambda wf: None)  # cached here
    other = Ledger.from_url(ledger_url)
    try:
        other.command(
            workflow_id,
            lambda wf: wf.send_handoff({"handoffId": "ho-2", "to": "billing", "status": "new"}),
        )
    finally:
        other.close()

    def acts(workflow: Workflow) -> str:
        workflow.require_participant("billing")  # handed to billing only by the other replica
        workflow.note_audit("billing", "acted", {}, "b1")
        return "acted"

    if batched:
        [outcome] = ledger.command_batch([(workflow_id, acts)])
        assert outcome.unwrap() == "acted"
    else:
        assert ledger.command(workflow_id, acts) == "acted"
