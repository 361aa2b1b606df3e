"""`verify` and the envelope reader at ledger scale: one consumer for the whole events
stream (more workflows than the server allows consumers), the ledger and the stream read in
pages that interleave, tampering still named, and the ledger's plain read giving what
eventsourcing's read gives."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse
from uuid import UUID

import pytest
from eventsourcing.persistence import Notification

from bus.ledger import Ledger, ledger_check, scan
from bus.ledger.ledger_check import verify_offline, verify_online
from bus.ledger.scan import EnvelopeReader, pages
from bus.operations.bench.ledger_scale import bench_signer, governed_workflow
from bus.transport.server import EmbeddedNats
from bus.transport.signing import runtime_signer, runtime_verifier
from tests.conftest import Bus, postgres_connection, relayed
from tests.ledger.test_verification import tamper, verify, workflow_with_evidence

CONSUMER_LIMIT = 12
"""The account's JetStream consumers on this test's server: fewer than its workflows."""
WORKFLOWS = 40

FEW_CONSUMERS = f"""
accounts {{
  CC: {{
    jetstream: {{ max_consumers: {CONSUMER_LIMIT}, max_mem: -1, max_file: -1, max_streams: -1 }}
    users: [{{ user: cc, password: cc }}]
  }}
}}
no_auth_user: cc
"""


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """This module's server allows only a few consumers (one per workflow failed past it)."""
    server = EmbeddedNats(tmp_path / "nats", authorization=FEW_CONSUMERS)
    await server.start()
    yield server
    await server.stop()


async def many_workflows(bus: Bus) -> list[str]:
    """``WORKFLOWS`` governed workflows (18 events each), signed by the runtime, published."""
    signer = runtime_signer(bus.settings)
    workflows = [governed_workflow(signer) for _ in range(WORKFLOWS)]
    bus.ledger.save(*workflows)
    await relayed(bus)
    return [str(workflow.id) for workflow in workflows]


def delete_event(ledger_url: str, workflow_id: str, version: int) -> None:
    """Remove one stored event behind the ledger's back."""
    uuid = UUID(workflow_id)
    if ledger_url.startswith("sqlite"):
        with sqlite3.connect(urlparse(ledger_url).path) as db:
            db.execute(
                "DELETE FROM stored_events WHERE originator_id = ? AND originator_version = ?",
                (uuid.hex, version),
            )
        return
    schema = parse_qs(urlparse(ledger_url).query)["schema"][0]
    with postgres_connection() as conn:
        conn.execute(
            f"DELETE FROM {schema}.claimcheck_events "
            "WHERE originator_id = %s AND originator_version = %s",
            (uuid, version),
        )


async def test_online_verify_reads_more_workflows_than_the_server_allows_consumers(
    bus: Bus, ledger_url: str
) -> None:
    workflows = await many_workflows(bus)
    result = verify(bus)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"intact: {WORKFLOWS} workflow(s), {2 * WORKFLOWS} evidence record(s)" in result.stdout
    assert "every event matches the events stream" in result.stdout

    def forge(document: dict) -> None:
        document["status"] = "failed"

    tamper(ledger_url, workflows[-3], 8, forge)  # its first ToolExecuted
    result = verify(bus)
    assert result.returncode == 1
    assert f"workflow {workflows[-3]}, event 8 (ToolExecuted)" in result.stdout
    assert "fields: status" in result.stdout
    assert verify(bus, "--offline").returncode == 0  # outside the evidence: the stream shows it


async def test_pages_of_the_ledger_and_batches_of_the_stream_interleave(
    bus: Bus, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small pages and batches, so each side is read in many steps; then a deletion."""
    monkeypatch.setattr(scan, "PAGE", 7)
    monkeypatch.setattr(ledger_check, "COPIES_PER_BATCH", 5)
    workflows = await many_workflows(bus)
    verifier = runtime_verifier(bus.settings)
    online = await verify_online(bus.ledger, bus.nc, bus.subjects, verifier)
    assert online.broken is None and online.compared
    assert (online.workflows, online.evidence) == (WORKFLOWS, 2 * WORKFLOWS)
    assert online.events == bus.ledger.recorder.max_notification_id()
    offline = verify_offline(bus.ledger, verifier)
    assert (offline.broken, offline.workflows, offline.events) == (None, WORKFLOWS, online.events)

    delete_event(ledger_url, workflows[10], 17)  # its checkpoint
    broken = (await verify_online(bus.ledger, bus.nc, bus.subjects, verifier)).broken
    assert broken is not None
    assert (broken.workflow_id, broken.version, broken.event_type) == (
        workflows[10],
        17,
        "CheckpointReached",
    )
    assert broken.problem == "it was published but is missing from the ledger"


async def test_a_forged_signature_deep_in_the_ledger_is_named(bus: Bus, ledger_url: str) -> None:
    workflows = await many_workflows(bus)

    def forge(document: dict) -> None:
        document["evidence"]["signature"] = document["evidence"]["signature"][::-1]

    tamper(ledger_url, workflows[25], 15, forge)  # its second evidence record
    result = verify(bus, "--offline")
    assert result.returncode == 1
    assert f"workflow {workflows[25]}, event 15 (EvidenceRecorded)" in result.stdout
    assert "not signed by the runtime's key" in result.stdout


async def test_the_fast_reader_gives_the_envelope_the_relay_publishes(bus: Bus) -> None:
    await workflow_with_evidence(bus)
    await many_workflows(bus)
    reader = EnvelopeReader(bus.ledger)
    for page in pages(bus.ledger):
        for notification in page:
            assert reader.envelope(notification) == reader.slow(notification)
    # A typed value below the top level (the transcoder's UUID), as the mapper renders it.
    first = next(pages(bus.ledger))[0]
    state = first.state.replace(
        b'"task":',
        b'"typed":{"_type_":"uuid_hex","_data_":"' + UUID(int=7).hex.encode() + b'"},"task":',
    )
    typed = Notification(
        id=first.id,
        originator_id=first.originator_id,
        originator_version=first.originator_version,
        topic=first.topic,
        state=state,
    )
    envelope = reader.envelope(typed)
    assert envelope == reader.slow(typed)
    assert envelope.data["typed"] == str(UUID(int=7))


@pytest.mark.parametrize("after, limit", [(0, 1000), (5, 7), (10_000, 10)])
def test_the_plain_read_gives_what_eventsourcings_read_gives(
    ledger: Ledger, after: int, limit: int
) -> None:
    """On SQLite and on PostgreSQL: the same notifications, the originator id as a string."""
    signer = bench_signer()
    ledger.save(*(governed_workflow(signer) for _ in range(3)))
    expected = [
        (n.id, str(n.originator_id), n.originator_version, n.topic, bytes(n.state))
        for n in ledger.recorder.select_notifications(after + 1, limit)
    ]
    plain = ledger.notifications(after, limit)
    assert [(n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in plain] == (
        expected
    )
    assert all(type(n.state) is bytes for n in plain)
    assert len(expected) == (min(limit, 54 - after) if after < 54 else 0)
