"""The runtime's request/reply paths, over a real nats-server, with the real tool host and SMTP."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bus.operations.mailbox import Mailbox
from bus.operations.operators import submit
from handoff_schemas import Reply, decode, encode
from tests.conftest import Bus, relayed

COMPLAINT = json.dumps({"customer": "northwind", "text": "refund now"}).encode()


async def ask(bus: Bus, agent: str, op: str, body: dict[str, Any] | bytes) -> Reply:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    msg = await bus.nc.request(bus.subjects.runtime(agent, op), data, timeout=10)
    return decode(msg.data, Reply)


async def started(bus: Bus, to: str = "triage") -> str:
    reply = await submit(bus.nc, bus.subjects, "triage_complaint", to, COMPLAINT)
    return reply.workflow_id


def handoff_request(workflow_id: str, **fields: str) -> dict[str, Any]:
    """A handoff request from triage to notifier, with ``fields`` changed."""
    return {
        "workflowId": workflow_id,
        "stepKey": "t/1",
        "to": "notifier",
        "task": "notify",
        "scope": "s",
        **fields,
    }


def types(bus: Bus, workflow_id: str) -> list[str]:
    return [event.type for event in bus.ledger.history(workflow_id)]


@pytest.mark.parametrize("data", [b"not json", b"", b"[1,2]", b'{"workflowId": 7}'])
async def test_a_malformed_request_gets_a_structured_error_and_the_runtime_keeps_serving(
    bus: Bus, data: bytes
) -> None:
    reply = await ask(bus, "triage", "checkpoint", data)
    assert not reply.ok
    assert reply.error.code == "invalid_request"
    assert reply.error.fields
    workflow_id = await started(bus)  # still serving
    assert (await ask(bus, "triage", "state", {"workflowId": workflow_id})).ok


async def test_an_unknown_operation_is_refused(bus: Bus) -> None:
    reply = await ask(bus, "triage", "launch_missiles", {})
    assert (reply.ok, reply.error.code) == (False, "unknown_operation")


@pytest.mark.parametrize("workflow_id", ["00000000-0000-0000-0000-000000000000", "nonsense"])
async def test_an_unknown_workflow_is_an_error_not_a_crash(bus: Bus, workflow_id: str) -> None:
    reply = await ask(
        bus, "triage", "checkpoint", {"workflowId": workflow_id, "stepKey": "k", "name": "c"}
    )
    assert (reply.ok, reply.error.code) == (False, "unknown_workflow")
    assert (
        await ask(bus, "triage", "state", {"workflowId": workflow_id})
    ).error.code == "unknown_workflow"


async def test_a_start_with_a_missing_artifact_is_refused(bus: Bus) -> None:
    request = {"task": "t", "to": "triage", "artifactId": "sha256-" + "1" * 64}
    reply = await ask(bus, "cli", "start", request)
    assert (reply.ok, reply.error.code) == (False, "invalid_request")
    assert "not found" in reply.error.message


async def test_the_first_handoff_reaches_the_agents_inbox(bus: Bus) -> None:
    workflow_id = await started(bus)
    inbox = await bus.nc.jetstream().subscribe(bus.subjects.inbox("triage"), ordered_consumer=True)
    msg = await inbox.next_msg(timeout=5)
    handoff = json.loads(msg.data)
    assert (handoff["workflowId"], handoff["to"], handoff["from"]) == (workflow_id, "triage", "cli")
    assert msg.headers["Nats-Msg-Id"] == handoff["handoffId"]


async def test_an_agent_cannot_act_in_a_workflow_it_was_not_handed(bus: Bus) -> None:
    workflow_id = await started(bus)
    reply = await ask(
        bus, "notifier", "checkpoint", {"workflowId": workflow_id, "stepKey": "k", "name": "c"}
    )
    assert (reply.ok, reply.error.code) == (False, "permission_denied")
    assert "CheckpointReached" not in types(bus, workflow_id)


async def test_a_tool_runs_once_per_step_key(bus: Bus, mailbox: Mailbox) -> None:
    workflow_id = await started(bus)
    evidence = (
        await ask(
            bus,
            "triage",
            "execute",
            {
                "workflowId": workflow_id,
                "stepKey": "t/1",
                "tool": "create_ticket",
                "payload": {"customer": "northwind", "title": "refund", "severity": "high"},
            },
        )
    ).result["evidence"]
    assert evidence["status"] == "succeeded" and evidence["refs"]["ticketId"].startswith("T-")
    email = {
        "workflowId": workflow_id,
        "stepKey": "t/2",
        "tool": "send_email",
        "payload": {"to": "ops@acme.example", "subject": "s", "body": "b"},
    }
    first = await ask(bus, "triage", "execute", email)
    assert not first.ok and first.error.code == "permission_denied"  # triage may not email
    again = await ask(bus, "triage", "execute", email)
    assert again == first
    assert mailbox.received == []
    assert types(bus, workflow_id).count("ToolExecuted") == 1


async def test_an_allowed_email_is_sent_once_and_evidenced(bus: Bus, mailbox: Mailbox) -> None:
    workflow_id = await started(bus, to="notifier")
    request = {
        "workflowId": workflow_id,
        "stepKey": "n/1",
        "tool": "send_email",
        "payload": {"to": "ops@acme.example", "subject": "escalation", "body": "please look"},
    }
    first = await ask(bus, "notifier", "execute", request)
    second = await ask(bus, "notifier", "execute", request)
    assert first.ok and second == first
    assert len(mailbox.received) == 1
    assert mailbox.received[0]["Message-ID"] == first.result["evidence"]["refs"]["messageId"]
    assert types(bus, workflow_id)[-5:] == [
        "ActionRequested",
        "PermissionDecided",
        "ToolExecuted",
        "EvidenceRecorded",
        "StepCompleted",
    ]


async def test_the_policy_is_checked_on_the_payloads_real_target(
    bus: Bus, mailbox: Mailbox
) -> None:
    """An agent that was told 'allowed' for one address cannot send to another."""
    workflow_id = await started(bus, to="notifier")
    permit = await ask(
        bus,
        "notifier",
        "permit",
        {
            "workflowId": workflow_id,
            "stepKey": "n/1",
            "action": "send_email",
            "resource": "mailto:ops@acme.example",
        },
    )
    assert permit.result["permission"] == "allowed"
    sneaky = await ask(
        bus,
        "notifier",
        "execute",
        {
            "workflowId": workflow_id,
            "stepKey": "n/2",
            "tool": "send_email",
            "payload": {"to": "press@pr-agency.example", "subject": "s", "body": "b"},
        },
    )
    assert sneaky.error.code == "permission_denied"
    assert mailbox.received == []
    workflow = bus.ledger.workflow(workflow_id)
    [denial] = [e for e in workflow.evidence.values() if e["status"] == "denied"]
    assert denial["resource"] == "mailto:press@pr-agency.example"
    assert "ToolExecuted" not in types(bus, workflow_id)


async def test_an_invalid_tool_payload_gets_field_errors_and_is_recorded(bus: Bus) -> None:
    workflow_id = await started(bus, to="notifier")
    reply = await ask(
        bus,
        "notifier",
        "execute",
        {
            "workflowId": workflow_id,
            "stepKey": "n/1",
            "tool": "send_email",
            "payload": {"to": "not-an-address", "subject": ""},
        },
    )
    assert reply.error.code == "invalid_tool_payload"
    assert {f.field for f in reply.error.fields} == {"to", "subject", "body"}
    assert reply.error.retry.strategy == "repair"
    assert types(bus, workflow_id)[-3:] == ["FailureClassified", "RetryDecided", "StepCompleted"]


async def test_a_schema_invalid_handoff_is_refused_and_recorded(bus: Bus) -> None:
    workflow_id = await started(bus)
    reply = await ask(
        bus,
        "triage",
        "handoff",
        handoff_request(workflow_id, artifactId="my-payload-inline", status="verified"),
    )
    assert reply.error.code == "invalid_request"
    assert [f.field for f in reply.error.fields] == ["artifactId"]
    last = bus.ledger.history(workflow_id)[-1]
    assert last.type == "HandoffRejected" and "artifactId" in last.data["reason"]


async def test_a_verified_handoff_without_evidence_is_not_delivered(bus: Bus) -> None:
    workflow_id = await started(bus)
    artifact = bus.ledger.workflow(workflow_id).artifact_id
    reply = await ask(
        bus,
        "triage",
        "handoff",
        handoff_request(workflow_id, artifactId=artifact, status="verified"),
    )
    assert reply.error.code == "invalid_handoff"
    # Issue 11: the refusal is judged as a claim, recorded, and leads to a decision.
    assert types(bus, workflow_id)[-5:] == [
        "ClaimMade",
        "HandoffRejected",
        "FailureClassified",
        "EscalationRaised",
        "StepCompleted",
    ]
    await relayed(bus)
    info = await bus.nc.jetstream().stream_info(bus.subjects.stream("handoff"))
    assert info.state.messages == 1  # only the first handoff, to triage


async def test_a_handoff_of_an_unstored_artifact_is_refused_and_recorded(bus: Bus) -> None:
    workflow_id = await started(bus)
    reply = await ask(
        bus,
        "triage",
        "handoff",
        handoff_request(workflow_id, artifactId="sha256-" + "9" * 64, status="completed"),
    )
    assert reply.error.code == "invalid_handoff"
    assert types(bus, workflow_id)[-1] == "HandoffRejected"


async def test_a_summary_completes_only_when_its_claim_is_verified(bus: Bus) -> None:
    workflow_id = await started(bus)
    unbacked = await ask(
        bus,
        "triage",
        "summarize",
        {
            "workflowId": workflow_id,
            "stepKey": "t/1",
            "summary": "all done",
            "claim": {"remarks": "ticket filed", "items": []},
        },
    )
    assert unbacked.result["claim"]["verdict"] == "unsupported"
    assert unbacked.result["workflowStatus"] == "escalated"

    backed_id = await started(bus)
    ticket = await ask(
        bus,
        "triage",
        "execute",
        {
            "workflowId": backed_id,
            "stepKey": "t/1",
            "tool": "create_ticket",
            "payload": {"customer": "c", "title": "t", "severity": "low"},
        },
    )
    backed = await ask(
        bus,
        "triage",
        "summarize",
        {
            "workflowId": backed_id,
            "stepKey": "t/2",
            "summary": "ticket filed",
            "claim": {
                "remarks": "ticket filed",
                "items": [
                    {
                        "action": "create_ticket",
                        "target": "ticket:c",
                        "status": "succeeded",
                        "evidenceId": ticket.result["evidence"]["auditId"],
                        "facts": {"severity": "low"},
                    }
                ],
            },
        },
    )
    assert (backed.result["claim"]["verdict"], backed.result["workflowStatus"]) == (
        "verified",
        "completed",
    )
    late = await ask(
        bus, "triage", "checkpoint", {"workflowId": backed_id, "stepKey": "t/3", "name": "x"}
    )
    assert late.error.code == "workflow_closed"


async def test_encoded_replies_never_carry_a_traceback(bus: Bus) -> None:
    reply = await ask(
        bus,
        "triage",
        "execute",
        encode({"workflowId": "x", "stepKey": "k", "tool": "nope", "payload": {}}),
    )
    assert not reply.ok and "Traceback" not in reply.error.message


async def test_a_step_another_replica_refused_is_refused_again(bus: Bus) -> None:
    """The race path inside the ledger command replays a recorded refusal, not an empty success."""
    from bus.runtime.protocol import Refusal

    workflow_id = await started(bus)
    email = {
        "workflowId": workflow_id,
        "stepKey": "t/1",
        "tool": "send_email",
        "payload": {"to": "ops@acme.example", "subject": "s", "body": "b"},
    }
    first = await ask(bus, "triage", "execute", email)
    assert first.error.code == "permission_denied"
    with pytest.raises(Refusal) as raised:
        await bus.runtime.steps.step(
            "triage", "execute", workflow_id, "t/1", lambda wf: {"ok": "no"}, require_open=False
        )
    assert raised.value.code == "permission_denied"


@pytest.mark.parametrize("op", ["checkpoint", "execute"])
async def test_a_step_asked_again_after_its_workflow_ended_gets_its_recorded_reply(
    bus: Bus, op: str
) -> None:
    """Checked in the step's own command (a pipeline step) or in its authorizing command (a
    tool call), a recorded reply stands after the workflow ended: the agent that lost the
    first answer gets it, not ``workflow_closed``."""
    workflow_id = await started(bus)
    body = {"workflowId": workflow_id, "stepKey": "t/1"}
    body |= (
        {"name": "filed"}
        if op == "checkpoint"
        else {
            "tool": "create_ticket",
            "payload": {"customer": "c", "title": "t", "severity": "low"},
        }
    )
    first = await ask(bus, "triage", op, body)
    assert first.ok, first.error
    cancelled = await ask(
        bus, "cli", "cancel", {"workflowId": workflow_id, "by": "ops", "reason": "test"}
    )
    assert cancelled.ok, cancelled.error
    again = await ask(bus, "triage", op, body)
    assert again == first
    late = await ask(bus, "triage", op, {**body, "stepKey": "t/2"})
    assert late.error is not None and late.error.code != "internal"
