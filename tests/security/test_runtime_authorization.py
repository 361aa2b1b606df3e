"""Item 4 of issue 12: authorization on every runtime operation, against a compromised
agent holding real credentials (``mallory``) and a victim (``triage``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.security.conftest import SecureBus


def first_handoff(bus: SecureBus, workflow_id: str) -> dict[str, Any]:
    return next(
        e.data["handoff"] for e in bus.ledger.history(workflow_id) if e.type == "HandoffSent"
    )


async def shared_workflow(bus: SecureBus) -> tuple[str, str, Any, Any]:
    """A workflow handed to triage, which hands it on to mallory: both take part."""
    workflow_id = await bus.start(to="triage")
    incoming = first_handoff(bus, workflow_id)
    triage, mallory = await bus.connect("agent-triage"), await bus.connect("agent-mallory")
    handoff = {
        "workflowId": workflow_id,
        "stepKey": f"{incoming['handoffId']}/1",
        "to": "mallory",
        "task": "notify",
        "artifactId": incoming["artifactId"],
        "status": "new",
        "scope": "s",
    }
    assert (await bus.ask(triage, "triage", "handoff", handoff)).ok
    return workflow_id, incoming["handoffId"], triage, mallory


def reasoning(workflow_id: str, step_key: str, **usage: int) -> dict[str, Any]:
    return {
        "workflowId": workflow_id,
        "stepKey": step_key,
        "purpose": "decide",
        "model": "scripted",
        "output": {"severity": "low"},
        "usage": usage,
    }


async def test_state_and_recorded_replies_need_taking_part(secure_bus: SecureBus) -> None:
    workflow_id = await secure_bus.start(to="triage")
    triage, mallory = (
        await secure_bus.connect("agent-triage"),
        await secure_bus.connect("agent-mallory"),
    )
    step = {"workflowId": workflow_id, "stepKey": "k/1", "name": "filed", "data": {"secret": 1}}
    assert (await secure_bus.ask(triage, "triage", "checkpoint", step)).ok

    state = await secure_bus.ask(mallory, "mallory", "state", {"workflowId": workflow_id})
    assert (state.ok, state.error.code) == (False, "permission_denied")
    replayed = await secure_bus.ask(mallory, "mallory", "checkpoint", step)
    assert (replayed.ok, replayed.error.code) == (False, "permission_denied")
    assert "secret" not in json.dumps(state.error.message + replayed.error.message)
    own = await secure_bus.ask(triage, "triage", "state", {"workflowId": workflow_id})
    assert own.ok and own.result["checkpoints"] == {"filed": {"secret": 1}}
    entries = await secure_bus.security_entries("mallory", expected=2)
    assert [(e["kind"], e["op"]) for e in entries] == [
        ("not_a_participant", "state"),
        ("not_a_participant", "checkpoint"),
    ]


async def test_a_step_key_belongs_to_the_agent_that_wrote_it(secure_bus: SecureBus) -> None:
    workflow_id, handoff_id, triage, mallory = await shared_workflow(secure_bus)

    # mallory cannot pre-record triage's next reasoning step (keyed under triage's handoff)
    hijack = await secure_bus.ask(
        mallory, "mallory", "reasoning", reasoning(workflow_id, f"{handoff_id}/2")
    )
    assert (hijack.ok, hijack.error.code) == (False, "permission_denied")
    # a key mallory did record is never replayed to triage, nor shown in triage's state
    assert (await secure_bus.ask(mallory, "mallory", "reasoning", reasoning(workflow_id, "m/1"))).ok
    stolen = await secure_bus.ask(triage, "triage", "reasoning", reasoning(workflow_id, "m/1"))
    assert (stolen.ok, stolen.error.code) == (False, "permission_denied")
    seen = await secure_bus.ask(triage, "triage", "state", {"workflowId": workflow_id})
    assert "m/1" not in seen.result["steps"] and f"{handoff_id}/1" in seen.result["steps"]
    theirs = await secure_bus.ask(mallory, "mallory", "state", {"workflowId": workflow_id})
    assert list(theirs.result["steps"]) == ["m/1"]
    # triage's own step still runs as its own
    mine = await secure_bus.ask(
        triage, "triage", "reasoning", reasoning(workflow_id, f"{handoff_id}/2")
    )
    assert mine.ok
    recorded = [
        (e.data["agent"], e.data["step_key"])
        for e in secure_bus.ledger.history(workflow_id)
        if e.type == "ReasoningRecorded"
    ]
    assert recorded == [("mallory", "m/1"), ("triage", f"{handoff_id}/2")]


async def test_a_tool_step_is_replayed_only_to_the_agent_that_ran_it(
    secure_bus: SecureBus,
) -> None:
    """``execute`` replays a recorded reply inside its authorizing command, with no check
    before dispatch: another participant asking for that step key gets a refusal, never the
    evidence, and the tool does not run again."""
    workflow_id, handoff_id, triage, mallory = await shared_workflow(secure_bus)
    ticket = {
        "workflowId": workflow_id,
        "stepKey": f"{handoff_id}/3",
        "tool": "create_ticket",
        "payload": {"customer": "northwind", "title": "secret-title", "severity": "low"},
    }
    first = await secure_bus.ask(triage, "triage", "execute", ticket)
    assert first.ok, first
    stolen = await secure_bus.ask(mallory, "mallory", "execute", ticket)
    assert (stolen.ok, stolen.error.code) == (False, "permission_denied")
    assert first.result["evidence"]["auditId"] not in json.dumps(stolen.error.message)
    again = await secure_bus.ask(triage, "triage", "execute", ticket)
    assert again == first
    executed = [e for e in secure_bus.ledger.history(workflow_id) if e.type == "ToolExecuted"]
    assert len(executed) == 1


async def test_only_the_operator_starts_workflows(secure_bus: SecureBus) -> None:
    workflow_id = await secure_bus.start(to="triage")
    artifact_id = first_handoff(secure_bus, workflow_id)["artifactId"]
    mallory = await secure_bus.connect("agent-mallory")
    request = {"task": "t", "to": "mallory", "artifactId": artifact_id, "budgetUsd": 1e12}
    refused = await secure_bus.ask(mallory, "mallory", "start", request)
    assert (refused.ok, refused.error.code) == (False, "invalid_request")  # the budget, first
    request["budgetUsd"] = 1.0
    refused = await secure_bus.ask(mallory, "mallory", "start", request)
    assert (refused.ok, refused.error.code) == (False, "permission_denied")
    assert secure_bus.ledger.workflow_ids() == [workflow_id]
    entries = await secure_bus.security_entries("mallory")
    assert [e["kind"] for e in entries] == ["start_refused"]


@pytest.mark.parametrize("budget", [1e12, -1.0])
async def test_budgets_are_bounded_even_for_the_operator(
    secure_bus: SecureBus, budget: float
) -> None:
    with pytest.raises(Exception, match="budgetUsd"):
        await secure_bus.start(to="triage", budget_usd=budget)


async def test_usage_is_never_negative(secure_bus: SecureBus) -> None:
    workflow_id, _, _, mallory = await shared_workflow(secure_bus)
    for usage in ({"inputTokens": -3_000_000}, {"outputTokens": 10**15}):
        reply = await secure_bus.ask(
            mallory, "mallory", "reasoning", reasoning(workflow_id, "m/1", **usage)
        )
        assert (reply.ok, reply.error.code) == (False, "invalid_request")
    assert "ReasoningRecorded" not in secure_bus.types(workflow_id)


async def test_a_forged_sender_never_reaches_a_foreign_workflow(secure_bus: SecureBus) -> None:
    foreign = await secure_bus.start(to="triage")
    own = await secure_bus.start(to="mallory")
    mallory = await secure_bus.connect("agent-mallory")
    malformed = {"workflowId": foreign, "from": "cli", "stepKey": "x", "to": "triage"}
    missing_artifact = {
        "workflowId": foreign,
        "stepKey": "x/2",
        "to": "triage",
        "task": "t",
        "artifactId": "sha256-" + "1" * 64,
        "status": "new",
        "scope": "s",
    }
    reply = await secure_bus.ask(mallory, "mallory", "handoff", malformed)
    assert (reply.ok, reply.error.code) == (False, "invalid_request")
    reply = await secure_bus.ask(mallory, "mallory", "handoff", missing_artifact)
    assert (reply.ok, reply.error.code) == (False, "permission_denied")
    assert "HandoffRejected" not in secure_bus.types(foreign)
    entries = await secure_bus.security_entries("mallory", expected=2)
    assert [e["kind"] for e in entries] == ["rejected_handoff_not_recorded", "not_a_participant"]

    # in its own workflow the rejection is recorded, with the authenticated sender
    await secure_bus.ask(mallory, "mallory", "handoff", {**malformed, "workflowId": own})
    rejected = [
        e.data["handoff"] for e in secure_bus.ledger.history(own) if e.type == "HandoffRejected"
    ]
    assert [r["from"] for r in rejected] == ["mallory"]


@pytest.mark.parametrize(
    "data",
    [
        b'{"workflowId": "w", "stepKey": "k", "name": "n", "data": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}",
        b"[" * 5000,
        b'{"workflowId": "w", "stepKey": "k", "name": "n", "data": {"a": '
        + b'{"b": ' * 40
        + b"1"
        + b"}" * 41
        + b"}",
        b'{"workflowId": "\xff\xfe", "stepKey": "k", "name": "n"}',
        b'{"workflowId": "w", "stepKey": "k", "name": "n", "data": {"big": "'
        + b"x" * 70_000
        + b'"}}',
        b'{"workflowId": "w", "stepKey": "k", "name": "' + b"n" * 300 + b'"}',
    ],
    ids=["deep-5000", "unclosed-5000", "deep-42", "not-utf8", "70kB", "long-name"],
)
async def test_undecodable_requests_get_a_structured_error(
    secure_bus: SecureBus, data: bytes
) -> None:
    mallory = await secure_bus.connect("agent-mallory")
    for op in ("checkpoint", "handoff", "state"):
        reply = await secure_bus.ask(mallory, "mallory", op, data)
        assert (reply.ok, reply.error.code) == (False, "invalid_request")
        assert reply.error.fields
