"""The relay's exactly-once publishing across restarts, and the artifact store's digest check."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bus.ledger import Ledger
from bus.ledger.relay import Relay
from bus.settings import Settings
from bus.transport.artifacts import ArtifactError, ArtifactStore, artifact_id
from bus.transport.connection import connect, ensure_streams
from bus.transport.subjects import Subjects

ARTIFACT = "sha256-" + "0" * 64


def add_workflow(ledger: Ledger) -> None:
    workflow = ledger.start(
        ledger.starting(
            "t",
            "triage",
            ARTIFACT,
            "s",
            "cli",
            1.0,
            {"handoffId": f"ho-{id(ledger)}", "to": "triage", "status": "new"},
        )
    )
    ledger.command(str(workflow.id), lambda wf: wf.note_audit("triage", "n", {}, "k"))


async def stream_positions(js, subjects: Subjects) -> list[int]:  # type: ignore[no-untyped-def]
    try:
        info = await js.stream_info(subjects.stream("events"))
    except NotFoundError:
        return []
    subscription = await js.subscribe(f"{subjects.prefix}.events.>", ordered_consumer=True)
    positions = []
    for _ in range(info.state.messages):
        msg = await subscription.next_msg(timeout=5)
        positions.append(int(msg.headers["Nats-Msg-Id"].removeprefix("event-")))
    await subscription.unsubscribe()
    return positions


async def run_relay_until_idle(ledger: Ledger, nc: Client, subjects: Subjects) -> None:
    relay = Relay(ledger, nc, subjects, poll_interval=0.05)
    task = asyncio.create_task(relay.run())
    last = ledger.recorder.max_notification_id()
    while (relay.tracking.max_tracking_id("relay") or 0) < last:  # noqa: ASYNC110 (polls the ledger)
        await asyncio.sleep(0.05)
    task.cancel()
    await relay.close()


@pytest.fixture
async def nc(settings: Settings) -> AsyncIterator[Client]:
    """A connection to the test's nats-server, with the deployment's streams."""
    client = await connect(settings, "test")
    await ensure_streams(client.jetstream(), Subjects(settings.prefix))
    yield client
    await client.close()


@pytest.fixture
def js(nc: Client) -> JetStreamContext:
    return nc.jetstream()


async def test_the_relay_resumes_from_its_tracked_position(
    settings: Settings, ledger: Ledger, nc: Client, js: JetStreamContext
) -> None:
    subjects = Subjects(settings.prefix)
    add_workflow(ledger)
    await run_relay_until_idle(ledger, nc, subjects)
    add_workflow(ledger)  # committed while no relay runs
    await run_relay_until_idle(ledger, nc, subjects)
    expected = [n.id for n in ledger.notifications(0)]
    assert await stream_positions(js, subjects) == expected


async def test_a_republished_batch_is_deduplicated_by_the_stream(
    settings: Settings, ledger: Ledger, nc: Client, js: JetStreamContext
) -> None:
    """A crash between publishing and tracking makes the relay publish again: no duplicates."""
    subjects = Subjects(settings.prefix)
    add_workflow(ledger)
    relay = Relay(ledger, nc, subjects)
    batch = ledger.notifications(0)
    await relay.publish(batch)
    await relay.publish(batch)  # as a second replica's relay, or after a lost tracking write
    await relay.close()
    assert await stream_positions(js, subjects) == [n.id for n in batch]


async def test_artifacts_are_content_addressed_and_checked_on_read(
    settings: Settings, nc: Client, js: JetStreamContext
) -> None:
    subjects = Subjects(settings.prefix)
    store = ArtifactStore(nc, subjects.artifact_bucket)
    identifier = await store.put(b"complaint")
    assert identifier == artifact_id(b"complaint")
    assert await store.put(b"complaint") == identifier
    assert await store.get(identifier) == b"complaint"
    # an object whose bytes do not match its name is refused
    forged = artifact_id(b"original")
    await (await js.object_store(subjects.artifact_bucket)).put(forged, b"tampered")
    with pytest.raises(ArtifactError, match="does not match its digest"):
        await store.get(forged)
    with pytest.raises(ArtifactError, match="not found"):
        await store.get(artifact_id(b"never stored"))
    # written as the object store writes (its chunks, its meta), readable by its own reader
    large = bytes(range(256)) * 1200  # three chunks
    large_id = await store.put(large)
    read = await (await js.object_store(subjects.artifact_bucket)).get(large_id)
    assert read.data == large and read.info.chunks == 3 and read.info.size == len(large)
    assert await ArtifactStore(nc, subjects.artifact_bucket).get(large_id) == large
