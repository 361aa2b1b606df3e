"""Evidence records what was done: each tool's declared facts, its action and target, and the
step that produced it, all under the hash chain. Real nats-server, runtime, tool host, SMTP."""

from __future__ import annotations

import json
from typing import Any

from agents import Context, RuntimeRefused, ScriptedModel
from bus.ledger.replay import replay
from bus.ledger.verification import check_chain
from bus.transport.artifacts import ArtifactStore
from handoff_schemas import EventEnvelope, evidence_hash
from projections import WorkflowView
from tests.conftest import Bus, run_workflow

POLICY = """
[[rules]]
name = "tickets"
actor = "triage"
action = "create_ticket"
resource = "ticket:*"
effect = "allow"

[[rules]]
name = "internal-email"
actor = "triage"
action = "send_email"
resource = "mailto:*@acme.example"
effect = "allow"

[failures.permission_denied]   # the agent is told to replan, and goes on
strategy = "replan"
"""


async def acts(ctx: Context) -> None:
    await ctx.tools.create_ticket(customer="contoso", title="outage", severity="high")
    await ctx.tools.send_email(to="ops@acme.example", subject="outage at contoso", body="b")
    try:
        await ctx.tools.send_email(to="press@pr.example", subject="statement", body="b")
    except RuntimeRefused:
        pass


def three_records(view: WorkflowView) -> bool:
    return len(view.evidence) == 3


async def test_evidence_holds_the_declared_facts_action_target_and_step(
    bus: Bus, mailbox: Any
) -> None:
    view = await run_workflow(bus, acts, ScriptedModel([]), until=three_records)
    ticket, email, denied = view.evidence
    assert (ticket["action"], ticket["resource"], ticket["status"]) == (
        "create_ticket",
        "ticket:contoso",
        "succeeded",
    )
    assert ticket["facts"] == {
        "customer": "contoso",
        "title": "outage",
        "severity": "high",
        "ticketId": ticket["refs"]["ticketId"],
    }
    assert (email["action"], email["resource"]) == ("send_email", "mailto:ops@acme.example")
    assert email["facts"] == {"recipient": "ops@acme.example", "subject": "outage at contoso"}
    # A denied action records what was attempted, so a claim about it can be checked too.
    assert denied["status"] == "denied"
    assert denied["facts"] == {"recipient": "press@pr.example", "subject": "statement"}
    handoff = view.handoffs[0]["handoffId"]
    # Steps 1 and 2 resolve the intent and assemble the context; the tools are 3, 4, 5.
    assert [record["stepKey"] for record in view.evidence] == [
        f"{handoff}/3",
        f"{handoff}/4",
        f"{handoff}/5",
    ]


async def test_a_changed_fact_breaks_the_evidence_hash(bus: Bus, mailbox: Any) -> None:
    view = await run_workflow(bus, acts, ScriptedModel([]), until=three_records)
    history = bus.ledger.history(view.workflow_id)
    assert check_chain(history) is None
    index = next(i for i, e in enumerate(history) if e.type == "EvidenceRecorded")
    record = history[index].data["evidence"]
    assert evidence_hash(record) == record["hash"]
    forged = {**record, "facts": {**record["facts"], "severity": "low"}}
    assert evidence_hash(forged) != record["hash"]
    tampered = [
        *history[:index],
        EventEnvelope(
            workflow_id=history[index].workflow_id,
            version=history[index].version,
            type=history[index].type,
            timestamp=history[index].timestamp,
            data={"evidence": forged},
        ),
        *history[index + 1 :],
    ]
    broken = check_chain(tampered)
    assert broken is not None and record["auditId"] in str(broken)
    # Today's code replays today's history to the same evidence.
    assert list(replay(history).evidence) == [e["auditId"] for e in view.evidence]


async def test_the_full_input_and_output_are_content_addressed_artifacts(
    bus: Bus, mailbox: Any
) -> None:
    view = await run_workflow(bus, acts, ScriptedModel([]), until=three_records)
    store = ArtifactStore(bus.nc, bus.subjects.artifact_bucket)
    ticket, email, denied = view.evidence
    payload = json.loads(await store.get(ticket["artifacts"]["input"]))
    result = json.loads(await store.get(ticket["artifacts"]["output"]))
    assert payload == {"customer": "contoso", "title": "outage", "severity": "high"}
    assert result["status"] == "succeeded"
    # Every recorded fact can be checked against the stored input and output.
    assert {k: ticket["facts"][k] for k in payload} == payload
    assert ticket["facts"]["ticketId"] == result["refs"]["ticketId"]
    assert json.loads(await store.get(email["artifacts"]["input"]))["to"] == "ops@acme.example"
    # A denied call never ran: what was asked is kept, there is no output.
    assert set(denied["artifacts"]) == {"input"}
    assert json.loads(await store.get(denied["artifacts"]["input"]))["to"] == "press@pr.example"
