"""Item 2 of issue 12: the runtime signs tool calls and evidence (Ed25519, nkeys); a tool
host runs only signed, unexpired calls; ``verify`` and the auditor accept only evidence
the runtime signed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import stat
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import nkeys
import pytest

from bus.ledger.verification import check_chain
from bus.operations.audit import ChainWatcher
from bus.operations.mailbox import Mailbox
from bus.operations.operators import submit
from bus.transport.signing import Signer, Verifier, runtime_signer, runtime_verifier, signed_bytes
from handoff_schemas import ToolCall, ToolResult, decode, encode, evidence_hash
from tests.conftest import Bus
from tests.security.conftest import SecureBus

EMAIL = {"to": "ceo@victim.example", "subject": "s", "body": "b"}


def call(key: str = "w/1", expires_in: float = 60, **payload: Any) -> ToolCall:
    return ToolCall(
        idempotency_key=key,
        workflow_id="w",
        actor="runtime",
        payload=payload or EMAIL,
        expires_at=datetime.now(UTC) + timedelta(seconds=expires_in),
    )


def signed(tool_call: ToolCall, signer: Signer) -> ToolCall:
    tool_call.signature = signer.sign(signed_bytes(msgspec.to_builtins(tool_call)))
    return tool_call


async def send(bus: Bus, tool_call: ToolCall | bytes) -> ToolResult:
    data = tool_call if isinstance(tool_call, bytes) else encode(tool_call)
    msg = await bus.nc.request(bus.subjects.tool("send_email"), data, timeout=10)
    return decode(msg.data, ToolResult)


async def test_the_tool_host_runs_only_calls_the_runtime_signed(bus: Bus, mailbox: Mailbox) -> None:
    runtime = runtime_signer(bus.settings)
    stranger = Signer(bytes(nkeys.encode_seed(b"\x01" * 32, nkeys.PREFIX_BYTE_USER)))
    tampered = signed(call("w/4"), runtime)
    tampered.payload = {**EMAIL, "to": "other@victim.example"}
    refusals = {
        "unsigned": call("w/1"),
        "another key": signed(call("w/1"), stranger),
        "expired": signed(call("w/3", expires_in=-1), runtime),
        "changed after signing": tampered,
    }
    for what, tool_call in refusals.items():
        result = await send(bus, tool_call)
        assert (result.status, result.transient) == ("failed", False), what
        assert result.error.startswith("refused"), what
    assert mailbox.received == []
    # a forged call did not poison the journal: the real call under its key still runs
    result = await send(bus, signed(call("w/1"), runtime))
    assert result.status == "succeeded"
    assert len(mailbox.received) == 1


async def test_evidence_is_signed_and_only_signed_evidence_verifies(bus: Bus) -> None:
    workflow_id = (await submit(bus.nc, bus.subjects, "t", "triage", b"{}")).workflow_id
    ticket = {"customer": "northwind", "title": "t", "severity": "low"}
    request = {
        "workflowId": workflow_id,
        "stepKey": "t/1",
        "tool": "create_ticket",
        "payload": ticket,
    }
    reply = await bus.runtime.dispatch("triage", "execute", json.dumps(request).encode())
    assert reply.ok, reply
    verifier = runtime_verifier(bus.settings)
    assert verifier is not None
    history = bus.ledger.history(workflow_id)
    assert check_chain(history, verifier) is None
    record = next(e.data["evidence"] for e in history if e.type == "EvidenceRecorded")
    assert verifier.verify(record["hash"].encode(), record["signature"])

    # someone who can write the ledger edits a record and re-hashes it: the hash holds,
    # the signature does not
    forged = {**record, "status": "failed"}
    forged["hash"] = evidence_hash(forged)
    edited = [
        msgspec.structs.replace(e, data={"evidence": forged}) if e.type == "EvidenceRecorded" else e
        for e in history
    ]
    assert check_chain(edited, None) is None  # without the key, nothing to tell
    broken = check_chain(edited, verifier)
    assert broken is not None and "not signed by the runtime" in broken.problem

    watcher = ChainWatcher(verifier=verifier)
    assert "not signed" in (watcher.check(forged) or "")
    assert watcher.check(record) is None


def test_the_key_is_private_and_its_public_half_verifies_alone(bus: Bus) -> None:
    signer = runtime_signer(bus.settings)
    seed = bus.settings.state_dir / "credentials" / "runtime.nk"
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600
    public = (bus.settings.state_dir / "runtime.pub").read_text().strip()
    assert public == signer.public_key and public.startswith("U")
    assert seed.read_text().strip() not in public
    assert Verifier(public).verify(b"x", signer.sign(b"x"))
    assert runtime_signer(bus.settings).public_key == public  # kept across starts


async def test_a_redirected_delivery_cannot_make_the_tool_host_act(
    secure_bus: SecureBus, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    """The attack of the issue: an agent pointed a push consumer at the tool's subject.
    The server now refuses the agent that consumer (``test_least_privilege``); should any
    other path deliver such bytes, a call that reaches the tool host unsigned is refused."""
    forged = encode(call("x/1"))
    with caplog.at_level(logging.WARNING, logger="bus.runtime.tool_host"):
        # the same bytes delivered as a push consumer delivers them: no reply subject
        await secure_bus.nc.publish("cc.tool.send_email", forged)
        for _ in range(50):
            if any("not signed by the runtime" in r.message for r in caplog.records):
                break
            await asyncio.sleep(0.05)
    assert any("not signed by the runtime" in r.message for r in caplog.records)
    await asyncio.sleep(0.3)
    assert mailbox.received == []

    # evidence pushed onto the auditor's feed the same way is not accepted either
    verifier = runtime_verifier(secure_bus.settings)
    record = {"auditId": "ev-forged", "workflowId": "w", "prevHash": "0" * 64}
    record["hash"] = evidence_hash(record)
    assert "not signed" in (ChainWatcher(verifier=verifier).check(record) or "")
