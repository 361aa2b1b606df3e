"""What a person (or script) outside the agents does: submit work and watch it finish.

The operator identity is ``cli`` on the runtime subject (``<prefix>.rt.cli.start``).
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client
from nats.js.api import DeliverPolicy

from bus.artifacts import ArtifactStore
from bus.subjects import Subjects
from handoff_schemas import EventEnvelope, Reply, StartReply, StartRequest, convert, decode, encode
from projections import WorkflowView

OPERATOR = "cli"


class SubmitError(Exception):
    pass


async def submit(
    nc: Client,
    subjects: Subjects,
    task: str,
    to: str,
    data: bytes,
    scope: str = "default",
    timeout: float = 30.0,
) -> StartReply:
    """Store the input as an artifact and start a workflow that hands it to ``to``."""
    artifact_id = await ArtifactStore(nc.jetstream(), subjects.artifact_bucket).put(data)
    request = StartRequest(task=task, to=to, artifact_id=artifact_id, scope=scope)
    msg = await nc.request(subjects.runtime(OPERATOR, "start"), encode(request), timeout=timeout)
    reply = decode(msg.data, Reply)
    if not reply.ok:
        assert reply.error is not None
        raise SubmitError(f"{reply.error.code}: {reply.error.message}")
    return convert(reply.result, StartReply)


async def watch(
    nc: Client, subjects: Subjects, workflow_id: str, timeout: float = 60.0
) -> WorkflowView:
    """Follow a workflow on the events stream until it finishes or ``timeout`` passes."""
    view = WorkflowView(workflow_id)
    subscription = await nc.jetstream().subscribe(
        subjects.event(workflow_id, ">"),
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    try:
        async with asyncio.timeout(timeout):
            while not view.finished:
                msg = await subscription.next_msg(timeout=None)
                view.apply(decode(msg.data, EventEnvelope))
    except TimeoutError:
        pass  # the caller sees view.finished is False
    finally:
        await subscription.unsubscribe()
    return view
