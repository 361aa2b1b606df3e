"""Ledgers written by earlier versions still load: every kind of event, stored under the topics
it had then, rebuilds the same workflow with today's code (on SQLite and PostgreSQL).

Where an event's code lives may change; the topic it is stored under may not, so today's
events are stored under the same topics as before the aggregate was split by concept.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import CanMutateAggregate

from bus.ledger import Ledger, Workflow
from bus.ledger.replay import summary
from handoff_schemas import ClaimAssertion, ClaimItem

LEGACY = "bus.ledger:Workflow."
"""Where the aggregate lived before ``bus/`` had subpackages."""
STORED = "bus.ledger.workflow:Workflow."
"""The topics events are stored under since."""


def every_kind_of_event(ledger: Ledger) -> str:
    """A workflow whose history holds one event (at least) of every kind there is."""
    workflow = ledger.start(ledger.starting(
        "triage_complaint", "triage", "sha256-" + "0" * 64, "test", "cli", 10.0,
        {"handoffId": "ho-1", "to": "triage", "status": "new"},
    ))  # fmt: skip
    step = "ho-1/1"
    workflow.resolve_intent("triage", "ho-1", "triage_complaint", step)
    workflow.assemble_context("triage", [{"artifactId": "a"}], step)
    workflow.record_reasoning("triage", "plan", "m", {"x": 1}, {"in": 1}, 0.01, step)
    workflow.note_model_unavailable("triage", "overloaded", 1, None, 1.0, "2030-01-01", step)
    workflow.request_action("triage", "create_ticket", "ticket:x", {}, step)
    workflow.decide_permission("triage", "create_ticket", "ticket:x", "allowed", "r", "ok", step)
    workflow.note_tool_unavailable("triage", "create_ticket", "no_responders", "", 1, 1, "", step)
    workflow.note_unknown_outcome("triage", "create_ticket", "host died", step)
    workflow.execute_tool("triage", "create_ticket", "succeeded", 1.0, 1, 0.0, step)
    evidence = workflow.add_evidence(
        actor="triage", action="create_ticket", resource="ticket:x", permission="allowed",
        rule="r", tool="create_ticket", status="succeeded", step_key=step,
    )  # fmt: skip
    workflow.reach_checkpoint("triage", "ticket-filed", {"id": 1}, step, [evidence.audit_id])
    workflow.note_audit("triage", "note", {}, step)
    workflow.complete_step(step, "tool", {"ok": True}, "", "triage")
    item = ClaimItem(
        action="create_ticket", target="ticket:x", status="succeeded",
        evidence_id=evidence.audit_id,
    )  # fmt: skip
    claim = workflow.make_claim("triage", "filed", ClaimAssertion(items=[item]), step)
    workflow.send_handoff(
        {"handoffId": "ho-2", "to": "notifier", "from": "triage", "status": "completed",
         "claimId": claim.claim_id},
        step_key=step,
    )  # fmt: skip
    try:
        workflow.send_handoff({"handoffId": "ho-3", "to": "x", "status": "verified"})
    except Exception:  # refused, and the refusal is an event: HandoffRejected
        pass
    workflow.classify_failure("notifier", "tool_error", "boom", "ho-2/1")
    workflow.decide_retry("tool_error", {"retry": True}, "ho-2/1")
    escalation = workflow.raise_escalation("policy", "ask", "notifier", "ho-2/1")
    workflow.resolve_escalation(escalation, "approve", "ops", "fine")
    workflow.resume(workflow.handoffs["ho-2"], escalation)
    workflow.quarantine_event(3, 3, "ToolExecuted", "too large", 10)
    workflow.record_external_check(
        {"evidenceId": evidence.audit_id, "workflowId": str(workflow.id), "tool": "create_ticket",
         "outcome": "confirmed", "checkedAt": "2030-01-01T00:00:00+00:00", "problems": []}
    )  # fmt: skip
    workflow.dead_letter(workflow.handoffs["ho-2"], 5)  # HandoffDeadLettered, WorkflowFailed
    workflow.report_fault(
        "notifier", "handler_exception", "ho-2", "ValueError", "x", "", 1, "ho-2/f"
    )
    workflow.await_signal("notifier", "go", "ho-2/2")
    workflow.receive_signal("go", {"ok": True}, "ops", "cli", "go on", "sig-1")
    workflow.stop_by_operator("cancel", "ops", "cli", "not needed")
    workflow.stop_by_operator("terminate", "ops", "cli", "really not")
    workflow.retry_handling("ho-2", "ops", "cli", "try again")  # WorkflowRetried, Resumed
    workflow.start_branch("wf-0", 3, "ops", "cli", "again from 3", {})
    workflow.mark_reset("wf-2", 9, "ops", "cli", "again from 9")
    workflow._completed("triage", claim.claim_id)  # the event alone: ho-2 is still open
    workflow.stop("operator")
    workflow.exceed_budget("spent")
    ledger.save(workflow)
    return str(workflow.id)


def event_kinds() -> set[str]:
    """Every kind of event the aggregate can record."""
    return {
        name
        for name in dir(Workflow)
        if name not in ("Event", "Created")  # eventsourcing's base classes, never recorded
        and isinstance(getattr(Workflow, name), type)
        and issubclass(getattr(Workflow, name), CanMutateAggregate)
    }


def events_table(ledger: Ledger) -> str:
    recorder: Any = ledger.recorder
    schema = getattr(recorder.datastore, "schema", "")  # PostgreSQL's; SQLite has none
    return f"{schema}.{recorder.events_table_name}" if schema else recorder.events_table_name


def stored_topics(ledger: Ledger) -> list[str]:
    recorder: Any = ledger.recorder
    with recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute(f"SELECT topic FROM {events_table(ledger)}")
        return [row["topic"] if isinstance(row, dict) else row[0] for row in cursor.fetchall()]


def rename_topics(ledger: Ledger, old: str, new: str) -> None:
    recorder: Any = ledger.recorder
    with recorder.datastore.transaction(commit=True) as cursor:
        table = events_table(ledger)
        cursor.execute(f"UPDATE {table} SET topic = REPLACE(topic, '{old}', '{new}')")


def test_the_history_covers_every_kind_of_event(ledger: Ledger) -> None:
    workflow_id = every_kind_of_event(ledger)
    assert {event.type for event in ledger.history(workflow_id)} == event_kinds()


def test_events_are_stored_under_the_topics_they_always_had(ledger: Ledger) -> None:
    every_kind_of_event(ledger)
    assert {topic.removeprefix(STORED) for topic in stored_topics(ledger)} == event_kinds()


def test_a_ledger_written_with_the_old_topics_loads(ledger_url: str) -> None:
    writer = Ledger.from_url(ledger_url)
    workflow_id = every_kind_of_event(writer)
    expected: dict[str, Any] = summary(writer.workflow(workflow_id))
    rename_topics(writer, STORED, LEGACY)
    assert all(topic.startswith(LEGACY) for topic in stored_topics(writer))
    writer.close()

    reader = Ledger.from_url(ledger_url)  # nothing cached: every event is read and applied
    try:
        assert summary(reader.workflow(workflow_id)) == expected
        assert {event.type for event in reader.history(workflow_id)} == event_kinds()
    finally:
        reader.close()
