"""Starts are safe to ask again, and operators ask again while no runtime answers.

A start carries the client's request id: asking again (after a lost answer, a leader
election, a dead replica) finds the workflow the first attempt started. ``submit`` made
while no runtime serves (a replica restarting, the cluster electing) waits with backoff
and jitter and succeeds once one serves, instead of failing at once.
"""

from __future__ import annotations

import asyncio

import pytest

from bus.ledger import Ledger
from bus.operations.operators import ask_runtime, submit
from bus.runtime.policy import Policy
from bus.runtime.service import Runtime
from bus.settings import Settings
from bus.transport.artifacts import ArtifactStore
from bus.transport.connection import connect, ensure_streams
from bus.transport.retry import backoff
from bus.transport.subjects import Subjects
from handoff_schemas import StartReply, StartRequest
from tests.conftest import Bus

pytestmark = pytest.mark.timeout(60)


async def test_a_start_asked_again_starts_nothing_new(bus: Bus) -> None:
    artifact = await ArtifactStore(bus.nc, bus.subjects.artifact_bucket).put(b"{}")
    request = StartRequest(task="t", to="triage", artifact_id=artifact, request_id="req-1")
    replies = await asyncio.gather(
        *(ask_runtime(bus.nc, bus.subjects, "start", request, StartReply) for _ in range(4))
    )
    assert len({reply.workflow_id for reply in replies}) == 1
    assert len({reply.handoff_id for reply in replies}) == 1
    assert bus.ledger.workflow_ids() == [replies[0].workflow_id]

    other = StartRequest(task="t", to="triage", artifact_id=artifact, request_id="req-2")
    second = await ask_runtime(bus.nc, bus.subjects, "start", other, StartReply)
    assert second.workflow_id != replies[0].workflow_id
    assert len(bus.ledger.workflow_ids()) == 2


async def test_submit_waits_for_a_runtime_instead_of_failing(
    settings: Settings, ledger: Ledger, policy: Policy
) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    nc = await connect(settings, "test-operator")
    subjects = Subjects(settings.prefix)
    await ensure_streams(nc.jetstream(), subjects)
    submitting = asyncio.create_task(submit(nc, subjects, "t", "triage", b"{}"))
    await asyncio.sleep(1.5)  # no runtime serves: no responders, again and again
    assert not submitting.done(), submitting
    runtime = Runtime(settings, ledger, policy, nc)
    await runtime.serve()
    try:
        reply = await asyncio.wait_for(submitting, 10)
        assert ledger.workflow_ids() == [reply.workflow_id]
    finally:
        await nc.drain()
        runtime.close()


def test_backoff_is_jittered_and_capped() -> None:
    pauses = [backoff(attempt) for attempt in range(20) for _ in range(20)]
    assert max(pauses) <= 2.0
    assert len({round(p, 6) for p in pauses}) > 300  # random, not in lock-step
