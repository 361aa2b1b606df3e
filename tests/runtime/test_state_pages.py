"""``state`` is paged: a read of a workflow's steps and checkpoints does not grow with its
history, and paging through it returns every step once, with its exact recorded reply."""

from __future__ import annotations

from typing import Any

from bus.operations.operators import submit
from handoff_schemas import Reply, convert
from tests.conftest import Bus
from tests.runtime.test_runtime import COMPLAINT, ask


async def pages(bus: Bus, request: dict[str, Any]) -> list[dict[str, Any]]:
    found, cursor = [], request.pop("cursor", "")
    while True:
        reply = await ask(bus, "triage", "state", {**request, "cursor": cursor})
        assert reply.ok, reply.error
        found.append(reply.result)
        cursor = reply.result["nextCursor"]
        if cursor is None:
            return found


async def test_state_pages_through_a_handlings_steps_with_their_recorded_replies(
    bus: Bus,
) -> None:
    started = await submit(bus.nc, bus.subjects, "triage_complaint", "triage", COMPLAINT)
    workflow_id, handling = started.workflow_id, started.handoff_id
    replies: dict[str, Reply] = {}
    for key in [f"{handling}/{n}" for n in range(1, 6)] + ["other/1", "other/2"]:
        body = {"workflowId": workflow_id, "stepKey": key, "name": f"c-{key}"}
        replies[key] = await ask(bus, "triage", "checkpoint", body)
        assert replies[key].ok

    request = {"workflowId": workflow_id, "stepPrefix": f"{handling}/", "limit": 2}
    found = await pages(bus, request)
    assert [len(page["steps"]) for page in found] == [2, 2, 1, 0]  # 7 checkpoints: 4 pages
    steps = {key: value for page in found for key, value in page["steps"].items()}
    assert {key: convert(value, Reply) for key, value in steps.items()} == {
        key: replies[key] for key in steps
    }
    assert sorted(steps) == sorted(key for key in replies if key.startswith(handling))
    checkpoints = {name for page in found for name in page["checkpoints"]}
    assert checkpoints == {f"c-{key}" for key in replies}

    everything = await ask(bus, "triage", "state", {"workflowId": workflow_id})  # an old caller
    assert set(everything.result["steps"]) == set(replies)
    assert everything.result["nextCursor"] is None


async def test_state_bounds_its_page_and_checks_its_cursor(bus: Bus) -> None:
    started = await submit(bus.nc, bus.subjects, "triage_complaint", "triage", COMPLAINT)
    for limit in (0, 1001):
        reply = await ask(
            bus, "triage", "state", {"workflowId": started.workflow_id, "limit": limit}
        )
        assert (reply.ok, reply.error.code) == (False, "invalid_request")
    reply = await ask(bus, "triage", "state", {"workflowId": started.workflow_id, "cursor": "x"})
    assert (reply.ok, reply.error.code) == (False, "invalid_request")
    reply = await ask(bus, "intruder", "state", {"workflowId": started.workflow_id})
    assert not reply.ok


async def test_a_retry_between_two_pages_skips_no_step(bus: Bus) -> None:
    """A retry forgets the failed steps of a handling; a reader paging through that
    handling meanwhile still gets every step that remains."""
    started = await submit(bus.nc, bus.subjects, "triage_complaint", "triage", COMPLAINT)
    workflow_id, handling = started.workflow_id, started.handoff_id
    key = [f"{handling}/{n}" for n in range(6)]  # key[1] to key[5]
    step = {"workflowId": workflow_id}
    assert (await ask(bus, "triage", "checkpoint", {**step, "stepKey": key[1], "name": "a"})).ok
    invalid = {"tool": "create_ticket", "payload": {"customer": 1}}  # refused: a failed step
    assert not (await ask(bus, "triage", "execute", {**step, "stepKey": key[2], **invalid})).ok
    assert (await ask(bus, "triage", "checkpoint", {**step, "stepKey": key[3], "name": "b"})).ok
    assert (await ask(bus, "triage", "checkpoint", {**step, "stepKey": key[4], "name": "c"})).ok
    unknown = {"handoffId": handling, "task": "triage_complaint", "knownTasks": []}
    assert not (await ask(bus, "triage", "intent", {**step, "stepKey": key[5], **unknown})).ok

    request = {"workflowId": workflow_id, "stepPrefix": f"{handling}/", "limit": 2}
    first = await ask(bus, "triage", "state", request)
    assert sorted(first.result["steps"]) == [key[1], key[2]]
    retried = await ask(
        bus, "cli", "retry", {"workflowId": workflow_id, "by": "ops", "reason": "test"}
    )
    assert retried.ok, retried.error
    rest = await pages(bus, {**request, "cursor": first.result["nextCursor"]})
    after = {k for page in rest for k in page["steps"]}
    assert after == {key[3], key[4]}  # key[3] was skipped when the cursor was an offset
