"""Item 3 of issue 12: the runtime answers only on the caller's own inbox, and every reader
skips what it cannot parse.

A compromised agent (a plain NATS client holding the agent's real credentials) names
reply subjects that are not its own inbox; the runtime must publish nothing there.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from bus.ledger.ledger_check import published_events
from bus.operations.audit import ChainWatcher, Finding, follow
from bus.operations.operators import escalations, watch
from tests.security.conftest import SecureBus


@pytest.mark.parametrize(
    "target",
    [
        "cc.events.{wf}.WorkflowCompleted",
        "cc.evidence.{wf}",
        "cc.escalation.{wf}",
        "cc.handoff.triage",
        "cc.tool.send_email",
        "_INBOX_agent-triage.stolen",
        "_INBOX_cli.stolen",
        "_INBOX.anything",
    ],
)
async def test_a_foreign_reply_subject_gets_no_reply_and_is_logged(
    secure_bus: SecureBus, target: str
) -> None:
    workflow_id = await secure_bus.start()
    reply_subject = target.format(wf=workflow_id)
    triage = await secure_bus.connect("agent-triage")
    overheard = await triage.subscribe("_INBOX_agent-triage.>")
    mallory = await secure_bus.connect("agent-mallory")
    await asyncio.sleep(0.5)  # the relay publishes the start
    before = {k: await secure_bus.stream_count(k) for k in ("events", "evidence", "escalation")}

    await mallory.publish(
        "cc.rt.mallory.state", b'{"workflowId": "%s"}' % workflow_id.encode(), reply=reply_subject
    )
    await mallory.flush()

    entries = await secure_bus.security_entries("mallory")
    assert [(e["kind"], e["op"]) for e in entries] == [("foreign_reply_subject", "state")]
    assert reply_subject in entries[0]["detail"]
    after = {k: await secure_bus.stream_count(k) for k in ("events", "evidence", "escalation")}
    assert after == before
    with pytest.raises(TimeoutError):
        await overheard.next_msg(timeout=0.3)
    # the same agent, asking properly, is answered on its own inbox
    reply = await secure_bus.ask(mallory, "mallory", "state", {"workflowId": workflow_id})
    assert reply.ok and reply.result["status"] == "running"


async def test_the_operator_is_answered_on_its_own_inbox(secure_bus: SecureBus) -> None:
    workflow_id = await secure_bus.start()  # submit asks the runtime as cli
    assert workflow_id
    assert await secure_bus.stream_count("security") == 0


async def test_readers_skip_a_stray_message_and_keep_reading(secure_bus: SecureBus) -> None:
    """Junk on the event, evidence and escalation streams (as the old runtime's replies put
    there) is reported and skipped by verify, audit follow, escalations and watch."""
    workflow_id = await secure_bus.start()
    js = secure_bus.nc.jetstream()
    junk = [b"not json", b'{"ok": false, "error": {"code": "internal"}}', b"[" * 5000, b"\xff"]
    for data in junk:
        await js.publish(f"cc.events.{workflow_id}.WorkflowCompleted", data)
        await js.publish(f"cc.evidence.{workflow_id}", data)
        await js.publish(f"cc.escalation.{workflow_id}", data)
    operator = await secure_bus.connect("cli")

    unreadable: list[str] = []
    events = await published_events(operator, secure_bus.subjects, workflow_id, unreadable)
    assert [e.type for e in events][:2] == ["WorkflowStarted", "HandoffSent"]
    assert len(unreadable) == len(junk)

    assert (await escalations(operator, secure_bus.subjects)).open == []
    view = await watch(operator, secure_bus.subjects, workflow_id, timeout=1)
    assert view.status == "running"  # the forged "WorkflowCompleted" bytes did not count

    auditor = await secure_bus.connect("auditor")
    findings: list[Finding] = []
    await follow(auditor, secure_bus.subjects, lambda f: findings.append(f) or True, idle_timeout=1)
    # on the evidence feed: three unparseable messages skipped, and the JSON object that
    # is no evidence record reported as a break (it never extends a chain)
    assert sorted(f.kind for f in findings if f.kind != "evidence") == [
        "break",
        *["unreadable"] * 3,
    ]


async def test_a_stray_message_cannot_extend_an_evidence_chain() -> None:
    """A record that hashes right but is not a whole evidence record is a break, not ok."""
    from bus.operations.audit import read_feed_message
    from bus.transport.subjects import Subjects
    from handoff_schemas import evidence_hash

    record = {"workflowId": "w", "prevHash": "0" * 64}
    record["hash"] = evidence_hash(record)
    chain = ChainWatcher()
    finding = read_feed_message("cc.evidence.w", json.dumps(record).encode(), chain, Subjects())
    assert finding.kind == "break" and "not an evidence record" in finding.text
    assert chain.last_hash == {}


async def test_security_entries_are_durable(secure_bus: SecureBus) -> None:
    mallory = await secure_bus.connect("agent-mallory")
    await mallory.publish("cc.rt.mallory.state", b"{}", reply="cc.evidence.x")
    await mallory.flush()
    assert await secure_bus.security_entries("mallory")
    info = await secure_bus.nc.jetstream().stream_info("CC_SECURITY")
    assert info.config.subjects == ["cc.security.>"]
