"""The judge's rules that no end-to-end scenario reaches easily, on the real ledger (SQLite and
PostgreSQL): a superseded outcome, delegation, a handoff's claim closing its handling, and the
policy's definitions of done."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bus.ledger import Ledger, LedgerError, Workflow
from bus.ledger.verdicts import Requirement
from bus.runtime.policy import Policy, PolicyError
from handoff_schemas import ClaimAssertion, ClaimItem

ARTIFACT = "sha256-" + "0" * 64


def start(ledger: Ledger) -> str:
    handoff = {"handoffId": "ho-1", "from": "cli", "to": "triage", "task": "file", "status": "new"}
    new = ledger.starting("file", "triage", ARTIFACT, "s", "cli", 1.0, handoff)
    return str(ledger.start(new).id)


def evidence(workflow: Workflow, agent: str, status: str, step: str) -> str:
    return workflow.add_evidence(
        actor=agent,
        action="create_ticket",
        resource="ticket:x",
        permission="allowed",
        rule="r",
        status=status,
        facts={"severity": "low"},
        step_key=step,
    ).audit_id


def filed(evidence_id: str) -> ClaimItem:
    return ClaimItem(
        action="create_ticket", target="ticket:x", status="succeeded", evidence_id=evidence_id
    )


def claim(ledger: Ledger, workflow_id: str, agent: str, step: str, *ids: str, **kw: Any) -> Any:
    assertion = ClaimAssertion(items=[filed(i) for i in ids])
    return ledger.command(
        workflow_id, lambda wf: wf.make_claim(agent, "done", assertion, step, **kw)
    )


def test_a_success_superseded_by_a_later_outcome_of_its_step_does_not_count(
    ledger: Ledger,
) -> None:
    workflow_id = start(ledger)
    first = ledger.command(workflow_id, lambda wf: evidence(wf, "triage", "succeeded", "ho-1/3"))
    ledger.command(workflow_id, lambda wf: evidence(wf, "triage", "failed", "ho-1/3"))
    judged = claim(ledger, workflow_id, "triage", "ho-1/4", first)
    assert judged.verdict == "contradicted"
    assert "superseded" in judged.reason


def test_a_delegates_evidence_counts_only_once_its_claim_verified(ledger: Ledger) -> None:
    workflow_id = start(ledger)
    ledger.command(
        workflow_id,
        lambda wf: wf.send_handoff(
            {"handoffId": "ho-2", "from": "triage", "to": "notifier", "task": "x", "status": "new"},
            step_key="ho-1/3",
        ),
    )
    theirs = ledger.command(workflow_id, lambda wf: evidence(wf, "notifier", "succeeded", "ho-2/3"))
    early = claim(ledger, workflow_id, "triage", "ho-1/4", theirs)
    assert (early.verdict, "produced by notifier" in early.reason) == ("unsupported", True)
    assert claim(ledger, workflow_id, "notifier", "ho-2/4", theirs).verdict == "verified"
    assert claim(ledger, workflow_id, "triage", "ho-1/5", theirs).verdict == "verified"
    # ... but never for an agent that did not hand the work over.
    assert claim(ledger, workflow_id, "auditor", "x/1", theirs).verdict == "unsupported"


def test_open_handlings_close_by_claim_or_by_a_done_delegation(ledger: Ledger) -> None:
    workflow_id = start(ledger)
    done = {"file": [Requirement("create_ticket")]}
    ledger.command(
        workflow_id,
        lambda wf: wf.send_handoff(
            {"handoffId": "ho-2", "from": "triage", "to": "notifier", "task": "y", "status": "new"},
            step_key="ho-1/3",
        ),
    )
    assert ledger.workflow(workflow_id).open_handlings(done) == ["ho-1", "ho-2"]
    theirs = ledger.command(workflow_id, lambda wf: evidence(wf, "notifier", "succeeded", "ho-2/3"))
    assert claim(ledger, workflow_id, "notifier", "ho-2/4", theirs, done=done).verdict == "verified"
    # ho-1 passed its work on; what came back verified meets its task's definition of done.
    assert ledger.workflow(workflow_id).open_handlings(done) == []
    # Had its task needed an email, ho-1 would still be open.
    assert ledger.workflow(workflow_id).open_handlings({"file": [Requirement("send_email")]}) == [
        "ho-1"
    ]


def test_a_workflow_completes_only_when_no_handling_is_open(ledger: Ledger) -> None:
    workflow_id = start(ledger)
    ledger.command(
        workflow_id,
        lambda wf: wf.send_handoff(
            {"handoffId": "ho-2", "from": "triage", "to": "notifier", "task": "y", "status": "new"},
            step_key="ho-1/3",
        ),
    )
    own = ledger.command(workflow_id, lambda wf: evidence(wf, "triage", "succeeded", "ho-1/4"))
    made = claim(ledger, workflow_id, "triage", "ho-1/5", own)
    assert made.verdict == "verified"  # closes ho-1, not ho-2
    with pytest.raises(LedgerError, match="open handlings: ho-2"):
        ledger.command(workflow_id, lambda wf: wf.complete("triage", made.claim_id))
    assert ledger.workflow(workflow_id).status == "running"


def test_the_policy_declares_each_tasks_definition_of_done(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        '[tasks.notify]\ndone = [{action = "send_email", target = "mailto:*@acme.example"}]\n'
    )
    assert Policy.load(path).done() == {
        "notify": [Requirement("send_email", "succeeded", "mailto:*@acme.example")]
    }
    path.write_text('[tasks.notify]\ndone = [{action = "send_email", status = "sent"}]\n')
    with pytest.raises(PolicyError, match=r"tasks\.notify\.done\.0\.status"):
        Policy.load(path)
    assert Policy.load().done()["notify_escalation"][0].action == "send_email"
