"""``begin``: a handling's intent, artifact and context in one request, against the real
runtime, ledger and object store: recorded once, replayed when asked again, and refused,
with nothing handed over, to whoever the handoff is not for."""

from __future__ import annotations

import base64
from typing import Any

from bus.operations.operators import store_artifact, submit
from handoff_schemas import StartReply
from tests.conftest import Bus
from tests.runtime.test_runtime import COMPLAINT, ask, types


async def started(bus: Bus) -> StartReply:
    return await submit(bus.nc, bus.subjects, "triage_complaint", "triage", COMPLAINT)


def begin_request(start: StartReply, artifact_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "workflowId": start.workflow_id,
        "handoffId": start.handoff_id,
        "task": "triage_complaint",
        "knownTasks": ["triage_complaint"],
        "artifactId": artifact_id,
        **fields,
    }


async def handoff_artifact(bus: Bus) -> str:
    return await store_artifact(bus.nc, bus.subjects, COMPLAINT)  # the same bytes, the same id


async def test_begin_records_intent_and_context_once_and_hands_over_the_artifact(
    bus: Bus,
) -> None:
    start = await started(bus)
    request = begin_request(start, await handoff_artifact(bus))
    first = await ask(bus, "triage", "begin", request)
    assert first.ok, first.error
    assert base64.b64decode(first.result["data"]) == COMPLAINT
    assert first.result["state"]["steps"] == {}  # nothing recorded before this handling
    recorded = types(bus, start.workflow_id)
    assert recorded.count("IntentResolved") == recorded.count("ContextAssembled") == 1

    again = await ask(bus, "triage", "begin", request)  # a redelivery
    assert again.ok, again.error
    assert base64.b64decode(again.result["data"]) == COMPLAINT
    steps = again.result["state"]["steps"]
    assert sorted(steps) == [f"{start.handoff_id}/1", f"{start.handoff_id}/2"]
    assert types(bus, start.workflow_id) == recorded  # replayed: nothing new recorded


async def test_begin_with_an_unknown_task_fails_the_workflow_and_stays_refused(bus: Bus) -> None:
    start = await started(bus)
    request = begin_request(start, await handoff_artifact(bus), knownTasks=["something_else"])
    first = await ask(bus, "triage", "begin", request)
    assert (first.ok, first.error.code) == (False, "unknown_task")
    assert "WorkflowFailed" in types(bus, start.workflow_id)
    again = await ask(bus, "triage", "begin", request)
    assert again == first
    assert "ContextAssembled" not in types(bus, start.workflow_id)


async def test_begin_by_an_agent_the_handoff_is_not_for_gets_nothing(bus: Bus) -> None:
    start = await started(bus)
    reply = await ask(bus, "notifier", "begin", begin_request(start, await handoff_artifact(bus)))
    assert (reply.ok, reply.error.code) == (False, "permission_denied")
    assert reply.result is None
    assert "IntentResolved" not in types(bus, start.workflow_id)


async def test_begin_naming_another_artifact_than_the_handoffs_gets_nothing(bus: Bus) -> None:
    """Another customer's input, stored and known by its digest, is not read through a
    handoff that does not carry it."""
    start = await started(bus)
    other = await store_artifact(bus.nc, bus.subjects, b'{"customer": "someone else"}')
    reply = await ask(bus, "triage", "begin", begin_request(start, other))
    assert (reply.ok, reply.error.code) == (False, "invalid_request")
    assert reply.result is None
    assert "ContextAssembled" not in types(bus, start.workflow_id)


async def test_begin_naming_an_unstored_artifact_is_refused(bus: Bus) -> None:
    start = await started(bus)
    reply = await ask(bus, "triage", "begin", begin_request(start, "sha256-" + "2" * 64))
    assert (reply.ok, reply.error.code) == (False, "invalid_request")
    assert "IntentResolved" not in types(bus, start.workflow_id)
