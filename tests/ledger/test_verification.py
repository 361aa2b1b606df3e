"""`claimcheck verify`: an edit to one stored event or evidence field, made directly in the
SQLite file or in PostgreSQL, is reported as exactly that record."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Callable
from urllib.parse import parse_qs, urlparse
from uuid import UUID

from bus.operations.operators import submit
from tests.conftest import Bus, claimcheck, postgres_connection, relayed


async def workflow_with_evidence(bus: Bus) -> str:
    """Two evidence records (a ticket, then a denied second one: max_calls), all published."""
    started = await submit(bus.nc, bus.subjects, "t", "triage", b"{}")
    for step, customer in (("s/1", "a"), ("s/2", "b")):
        request = {
            "workflowId": started.workflow_id,
            "stepKey": step,
            "tool": "create_ticket",
            "payload": {"customer": customer, "title": "t", "severity": "low"},
        }
        await bus.nc.request(
            bus.subjects.runtime("triage", "execute"), json.dumps(request).encode(), timeout=10
        )
    await relayed(bus)
    return started.workflow_id


def verify(bus: Bus, *args: str) -> subprocess.CompletedProcess[str]:
    """``claimcheck verify`` against this test's own NATS and ledger."""
    ledger = {
        "CLAIMCHECK_NATS_URL": bus.settings.nats_url,
        "CLAIMCHECK_LEDGER": bus.settings.ledger,
    }
    # This test's state directory, so its key (not a demo's in ./.claimcheck) verifies.
    return claimcheck("verify", *args, env=ledger, state_dir=bus.settings.state_dir)


def tamper(ledger_url: str, workflow_id: str, version: int, change: Callable[[dict], None]) -> None:
    """Rewrite one stored event's JSON behind the ledger's back."""
    uuid = UUID(workflow_id)
    if ledger_url.startswith("sqlite"):
        with sqlite3.connect(urlparse(ledger_url).path) as db:
            where = "WHERE originator_id = ? AND originator_version = ?"
            (state,) = db.execute(
                f"SELECT state FROM stored_events {where}", (uuid.hex, version)
            ).fetchone()
            document = json.loads(state)
            change(document)
            db.execute(
                f"UPDATE stored_events SET state = ? {where}",
                (json.dumps(document).encode(), uuid.hex, version),
            )
        return
    schema = parse_qs(urlparse(ledger_url).query)["schema"][0]
    with postgres_connection() as conn:
        table = f"{schema}.claimcheck_events"
        where = "WHERE originator_id = %s AND originator_version = %s"
        (state,) = conn.execute(f"SELECT state FROM {table} {where}", (uuid, version)).fetchone()
        document = json.loads(bytes(state))
        change(document)
        conn.execute(
            f"UPDATE {table} SET state = %s {where}", (json.dumps(document).encode(), uuid, version)
        )


def versions_of(bus: Bus, workflow_id: str, event_type: str) -> list[int]:
    return [e.version for e in bus.ledger.history(workflow_id) if e.type == event_type]


async def test_an_intact_record_verifies(bus: Bus) -> None:
    workflow_id = await workflow_with_evidence(bus)
    result = verify(bus)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "intact: 1 workflow(s), 2 evidence record(s)" in result.stdout
    assert verify(bus, workflow_id, "--offline").returncode == 0


async def test_a_changed_evidence_field_is_named(bus: Bus, ledger_url: str) -> None:
    workflow_id = await workflow_with_evidence(bus)
    _, second = versions_of(bus, workflow_id, "EvidenceRecorded")
    audit_id = bus.ledger.history(workflow_id)[second - 1].data["evidence"]["auditId"]

    def forge(document: dict) -> None:
        document["evidence"]["status"] = "failed"

    tamper(ledger_url, workflow_id, second, forge)
    for args in ((), (workflow_id, "--offline")):
        result = verify(bus, *args)
        assert result.returncode == 1
        assert f"event {second} (EvidenceRecorded), evidence {audit_id}" in result.stdout
        assert "do not match its hash" in result.stdout
        assert "Traceback" not in result.stdout + result.stderr


async def test_a_changed_event_outside_the_evidence_is_named(bus: Bus, ledger_url: str) -> None:
    workflow_id = await workflow_with_evidence(bus)
    executed = versions_of(bus, workflow_id, "ToolExecuted")[0]

    def forge(document: dict) -> None:
        document["status"] = "failed"

    tamper(ledger_url, workflow_id, executed, forge)
    result = verify(bus, workflow_id)
    assert result.returncode == 1
    assert f"event {executed} (ToolExecuted)" in result.stdout
    assert "fields: status" in result.stdout


async def test_an_unknown_workflow_is_a_clear_error(bus: Bus) -> None:
    result = verify(bus, "00000000-0000-0000-0000-000000000000")
    assert result.returncode == 1
    assert "no workflow" in result.stdout and "Traceback" not in result.stdout + result.stderr
