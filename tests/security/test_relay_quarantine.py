"""Item 5 of issue 12: no single event can stop the relay.

A real nats-server with a small ``max_payload``: an event larger than that is
quarantined (an alert, and an ``EventQuarantined`` event of its workflow), and every
event after it is still published, across relay restarts, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import pytest
from eventsourcing.persistence import StoredEvent
from nats.aio.client import Client
from nats.js import JetStreamContext

from bus.ledger import Ledger
from bus.ledger.relay import AfterQuarantine, Relay
from bus.ledger.verification import first_break
from bus.ledger.view_runner import ViewRunner, open_views
from bus.runtime.governance import after_quarantine
from bus.runtime.policy import FailureStrategy, Policy
from bus.settings import Settings
from bus.transport.connection import connect, ensure_streams
from bus.transport.server import EmbeddedNats
from bus.transport.subjects import Subjects
from handoff_schemas import EventEnvelope, decode
from projections.ledger_views import workflow_states

MAX_PAYLOAD = 8 * 1024
SUBJECTS = Subjects("cc")


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[Client]:
    """A connection to a nats-server whose ``max_payload`` is small."""
    server = EmbeddedNats(tmp_path / "nats", max_payload=MAX_PAYLOAD)
    await server.start()
    nc = await connect(Settings(nats_url=server.url, state_dir=tmp_path), "relay-test")
    assert nc.max_payload == MAX_PAYLOAD
    await ensure_streams(nc.jetstream(), SUBJECTS)
    yield nc
    await nc.close()
    await server.stop()


def started(ledger: Ledger, name: str) -> str:
    workflow = ledger.start(
        ledger.starting(
            "t",
            "triage",
            "sha256-" + "0" * 64,
            "s",
            "cli",
            1.0,
            {"handoffId": f"ho-{name}", "to": "triage", "status": "new"},
        )
    )
    return str(workflow.id)


def checkpoint(ledger: Ledger, workflow_id: str, name: str, size: int) -> None:
    ledger.command(
        workflow_id, lambda wf: wf.reach_checkpoint("triage", name, {"blob": "x" * size}, name)
    )


async def relay_until_idle(
    ledger: Ledger, nc: Client, after_quarantine: AfterQuarantine | None = None
) -> None:
    """Run a relay until it tracked every notification (quarantine records included)."""
    relay = Relay(ledger, nc, SUBJECTS, poll_interval=0.05, after_quarantine=after_quarantine)
    task = asyncio.create_task(relay.run())
    try:
        async with asyncio.timeout(20):
            while (relay.tracking.max_tracking_id("relay") or 0) < (  # noqa: ASYNC110
                ledger.recorder.max_notification_id() or 0
            ):
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await relay.close()


async def published(js: JetStreamContext, workflow_id: str) -> list[EventEnvelope]:
    subscription = await js.subscribe(SUBJECTS.event(workflow_id, ">"), ordered_consumer=True)
    events = []
    try:
        while True:
            try:
                events.append(
                    decode((await subscription.next_msg(timeout=0.5)).data, EventEnvelope)
                )
            except TimeoutError:
                return events
    finally:
        await subscription.unsubscribe()


async def test_an_event_too_large_to_publish_is_quarantined_and_the_rest_flow_on(
    ledger: Ledger, small: Client, caplog: pytest.LogCaptureFixture
) -> None:
    big, other = started(ledger, "big"), started(ledger, "other")
    checkpoint(ledger, big, "huge", 4 * MAX_PAYLOAD)
    huge_position = ledger.recorder.max_notification_id()
    checkpoint(ledger, big, "after", 10)
    checkpoint(ledger, other, "fine", 10)

    with caplog.at_level(logging.ERROR, logger="bus.ledger.relay"):
        await relay_until_idle(ledger, small)
    assert any("ALERT" in r.message and str(huge_position) in r.message for r in caplog.records)

    history = ledger.history(big)
    quarantines = [e.data for e in history if e.type == "EventQuarantined"]
    assert [(q["position"], q["event_type"]) for q in quarantines] == [
        (huge_position, "CheckpointReached")
    ]
    assert "MaxPayloadError" in quarantines[0]["reason"]
    copies = await published(small.jetstream(), big)
    assert [e.type for e in copies] == [
        "WorkflowStarted",
        "HandoffSent",
        "CheckpointReached",  # "after": the one behind the huge one still went out
        "EventQuarantined",
    ]
    assert copies[2].data["name"] == "after"
    assert [e.type for e in await published(small.jetstream(), other)][-1] == "CheckpointReached"
    assert first_break(history, copies) is None  # verify expects no copy of a quarantined event

    # a restarted relay neither stops at it nor quarantines it twice; new events flow
    checkpoint(ledger, other, "later", 10)
    await relay_until_idle(ledger, small)
    assert [e.type for e in ledger.history(big)].count("EventQuarantined") == 1
    assert (await published(small.jetstream(), other))[-1].data["name"] == "later"


async def test_a_republished_batch_does_not_quarantine_twice(ledger: Ledger, small: Client) -> None:
    """A crash between quarantining and tracking makes the relay see the event again."""
    workflow_id = started(ledger, "w")
    checkpoint(ledger, workflow_id, "huge", 2 * MAX_PAYLOAD)
    relay = Relay(ledger, small, SUBJECTS)
    batch = ledger.notifications(0)
    await relay.publish(batch)
    await relay.publish(batch)
    await relay.close()
    assert [e.type for e in ledger.history(workflow_id)].count("EventQuarantined") == 1


@pytest.mark.parametrize(
    ("topic", "state"),
    [
        ("bus.ledger.workflow:Workflow.Nonsense", b"\x00not json"),  # a topic that is gone
        ("bus.ledger.workflow:Workflow.CheckpointReached", b"\x00not json"),  # corrupt bytes
        ("bus.ledger.workflow:Workflow.CheckpointReached", b'{"name": "no timestamp"}'),
    ],
)
async def test_an_unreadable_stored_event_stops_neither_the_relay_nor_the_views(
    ledger: Ledger, ledger_url: str, small: Client, tmp_path: Path, topic: str, state: bytes
) -> None:
    """A stored event today's code cannot read (a corrupt row, a topic that no longer exists):
    the relay's and the views' fast decoder meets it first."""
    workflow_id = started(ledger, "w")
    ledger.recorder.insert_events([StoredEvent(uuid4(), 1, topic, state)])
    checkpoint(ledger, workflow_id, "after", 10)

    await relay_until_idle(ledger, small)
    assert (await published(small.jetstream(), workflow_id))[-1].data["name"] == "after"

    views = open_views(Settings(state_dir=tmp_path / "state", ledger=ledger_url))
    assert ViewRunner(ledger, views).catch_up() == ledger.recorder.max_notification_id()
    (row,) = workflow_states(views, workflow_id)
    assert row["checkpoints"] == {"after": {"blob": "x" * 10}}


def hand_on(ledger: Ledger, workflow_id: str, size: int) -> str:
    """The workflow's agent hands work on with a task name of ``size`` characters."""
    handoff = {
        "handoffId": f"ho-big-{size}",
        "workflowId": workflow_id,
        "from": "triage",
        "to": "notifier",
        "task": "n" * size,
        "artifactId": "sha256-" + "0" * 64,
        "status": "new",
        "scope": "s",
    }
    ledger.command(workflow_id, lambda wf: wf.send_handoff(handoff, "", "ho-w/1"))
    return handoff["handoffId"]


@pytest.mark.parametrize(
    ("strategy", "status", "last"),
    [("escalate", "escalated", "EscalationRaised"), ("fail", "failed", "WorkflowFailed")],
)
async def test_a_quarantined_handoff_goes_on_to_a_decision_at_once(
    ledger: Ledger, small: Client, strategy: str, status: str, last: str
) -> None:
    """Nobody will receive the handoff, so the failure table decides now, not the sweeper
    a step lease later: a human by default, or whatever the policy says."""
    policy = Policy.load()
    policy.failures["handoff_quarantined"] = FailureStrategy(strategy=strategy)
    workflow_id = started(ledger, "w")
    handoff_id = hand_on(ledger, workflow_id, 2 * MAX_PAYLOAD)

    await relay_until_idle(ledger, small, after_quarantine(policy))
    history = ledger.history(workflow_id)
    assert [e.type for e in history][-5:] == [
        "HandoffSent",
        "EventQuarantined",
        "FailureClassified",
        "RetryDecided",
        last,
    ]
    failure = next(e.data for e in history if e.type == "FailureClassified")
    assert failure["kind"] == "handoff_quarantined" and handoff_id in failure["detail"]
    assert ledger.read(workflow_id, lambda wf: wf.status) == status
    # the decision reached the streams: a human sees the escalation, a watcher the end
    assert [e.type for e in await published(small.jetstream(), workflow_id)][-1] == last


async def test_a_quarantined_event_that_delivers_nothing_decides_nothing(
    ledger: Ledger, small: Client
) -> None:
    workflow_id = started(ledger, "w")
    checkpoint(ledger, workflow_id, "huge", 2 * MAX_PAYLOAD)
    await relay_until_idle(ledger, small, after_quarantine(Policy.load()))
    assert [e.type for e in ledger.history(workflow_id)][-1] == "EventQuarantined"
    assert ledger.read(workflow_id, lambda wf: wf.status) == "running"
