"""When a tool host answers a call against when the journal has its result.

A final result is answered at once and stored meanwhile: waiting for the store would
make no crash safer, since a host that dies before storing leaves the same unknown
outcome whether or not it answered. A transient failure is released first, so the
caller's retry finds the key free. A host that stops stores what it answered first, and
one lost between its answer and the store leaves an outcome the next host reconciles to
what was answered.

Each test holds the journal's writes of results at a gate, on a real nats-server with
the bucket the runtime creates.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.js.kv import KeyValue

from bus.runtime.journal import STOPPING, Entry, SharedJournal, bucket_key
from bus.runtime.tool_host import ToolHost
from bus.settings import Settings
from bus.tools import complaints
from bus.transport.connection import connect, ensure_streams
from bus.transport.server import EmbeddedNats
from bus.transport.signing import runtime_signer, signed_bytes
from bus.transport.subjects import Subjects
from handoff_schemas import ToolCall, ToolResult, decode, encode

SUBJECTS = Subjects("cc")
SUCCEEDED = ToolResult(status="succeeded", output={"ticketId": "T-1"}, refs={"ticketId": "T-1"})
TRANSIENT = ToolResult(status="failed", error="smtp busy", transient=True)


class GatedKeyValue:
    """The real bucket, with its compare-and-set updates (the results) held until opened."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self.gate = asyncio.Event()

    async def update(self, *args: Any, **kwargs: Any) -> int:
        await self.gate.wait()
        return await self.kv.update(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kv, name)


@pytest.fixture
async def nc(tmp_path: Path, nats_server: EmbeddedNats) -> AsyncIterator[Client]:
    client = await connect(Settings(state_dir=tmp_path, nats_url=nats_server.url), "test")
    await ensure_streams(client.jetstream(), SUBJECTS)
    yield client
    await client.close()


async def gated_journal(nc: Client) -> tuple[SharedJournal, GatedKeyValue]:
    kv = GatedKeyValue(await nc.jetstream().key_value(SUBJECTS.journal_bucket))
    return SharedJournal(kv, "host-1", lease_seconds=5), kv  # type: ignore[arg-type]


async def entry(kv: GatedKeyValue, key: str) -> Entry:
    found = await kv.kv.get(bucket_key(key))
    return msgspec.json.decode(found.value or b"", type=Entry)


async def test_a_final_result_is_answered_before_the_journal_has_stored_it(nc: Client) -> None:
    journal, kv = await gated_journal(nc)
    key = f"wf/{uuid4().hex}/1"

    async def effect(reconciling: str) -> ToolResult:
        return SUCCEEDED

    answered = await asyncio.wait_for(journal.once(key, effect), 5)  # the gate is shut

    assert answered == SUCCEEDED
    assert (await entry(kv, key)).state == "claimed"
    kv.gate.set()
    await asyncio.wait_for(journal.recorded(), 5)
    stored = await entry(kv, key)
    assert stored.state == "done" and stored.result == SUCCEEDED
    ran_again = await journal.once(key, effect)  # later calls get the stored result
    assert ran_again == SUCCEEDED


async def test_a_transient_failure_is_released_before_it_is_answered(nc: Client) -> None:
    journal, kv = await gated_journal(nc)
    key = f"wf/{uuid4().hex}/1"

    async def effect(reconciling: str) -> ToolResult:
        return TRANSIENT

    answer = asyncio.create_task(journal.once(key, effect))
    await asyncio.sleep(0.5)
    assert not answer.done(), "answered while the key was still claimed"
    kv.gate.set()
    assert await asyncio.wait_for(answer, 5) == TRANSIENT
    assert (await entry(kv, key)).state == "released"


async def test_a_stopping_host_stores_what_it_answered_before_it_ends(
    nc: Client, tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    host = ToolHost(Settings(state_dir=tmp_path, nats_url=nats_server.url), [complaints])
    await host.serve(nc)
    assert host.journal is not None
    kv = GatedKeyValue(host.journal.kv)
    host.journal.kv = kv  # type: ignore[assignment]
    key = f"wf/{uuid4().hex}/1"
    payload = {"customer": "contoso", "title": "outage", "severity": "high"}
    call = ToolCall(idempotency_key=key, workflow_id="wf", actor="triage", payload=payload)

    answered = await asyncio.wait_for(host.call(host.tools["create_ticket"], call), 5)

    assert b"succeeded" in answered
    stopping = asyncio.create_task(host.stop())
    await asyncio.sleep(0.5)
    assert not stopping.done(), "stopped with an answered result not yet stored"
    kv.gate.set()
    await asyncio.wait_for(stopping, 5)
    assert (await entry(kv, key)).state == "done"


async def test_a_stopping_host_answers_a_call_another_host_holds_at_once(
    nc: Client, tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    """Another host's claim, renewed through a long effect, held this host's stop as long
    as the effect ran: the waiting call is answered as a transient failure (the runtime
    asks again), and the effect runs once, on the host that holds it."""
    settings = Settings(state_dir=tmp_path, nats_url=nats_server.url)
    signer = runtime_signer(settings)  # the key the host checks calls against
    host = ToolHost(settings, [complaints])
    await host.serve(nc)
    other = SharedJournal(
        await nc.jetstream().key_value(SUBJECTS.journal_bucket), "host-2", lease_seconds=1
    )
    release, runs = asyncio.Event(), []

    async def long_effect(reconciling: str) -> ToolResult:
        runs.append(reconciling)
        await release.wait()
        return SUCCEEDED

    key = f"wf/{uuid4().hex}/1"
    holding = asyncio.create_task(other.once(key, long_effect))
    payload = {"customer": "contoso", "title": "outage", "severity": "high"}
    call = ToolCall(idempotency_key=key, workflow_id="wf", actor="triage", payload=payload)
    call.expires_at = datetime.now(UTC) + timedelta(seconds=60)
    call.signature = signer.sign(signed_bytes(msgspec.to_builtins(call)))
    asked = asyncio.create_task(
        nc.request(SUBJECTS.tool("create_ticket"), encode(call), timeout=10)
    )
    await asyncio.sleep(1.5)  # past the first lease: the other host renewed its claim
    assert runs == [""] and not asked.done()

    await asyncio.wait_for(host.stop(), 2)

    assert decode((await asked).data, ToolResult) == STOPPING
    release.set()
    assert await holding == SUCCEEDED
    assert runs == [""]
    assert not settings.tickets_path().exists()  # this host filed no ticket


async def test_a_host_lost_between_its_answer_and_the_store_is_reconciled_to_that_answer(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    """The window the early answer opens: the caller has the result, the journal only the
    claim. Held at the gate, the first host's writes (the result and every renewal) never
    land, as a dead host's would not; the second host finds the lease lapsed and the
    ticket store's key gives back the ticket already answered, not a second one."""
    settings = Settings(state_dir=tmp_path, nats_url=nats_server.url, tool_lease=0.5)
    key = f"wf/{uuid4().hex}/1"
    payload = {"customer": "contoso", "title": "outage", "severity": "high"}
    call = ToolCall(idempotency_key=key, workflow_id="wf", actor="triage", payload=payload)
    first_nc = await nats.connect(nats_server.url)
    second_nc = await nats.connect(nats_server.url)
    try:
        await ensure_streams(first_nc.jetstream(), SUBJECTS)
        first, second = ToolHost(settings, [complaints]), ToolHost(settings, [complaints])
        await first.serve(first_nc)
        await second.serve(second_nc)
        assert first.journal is not None
        held = GatedKeyValue(first.journal.kv)
        first.journal.kv = held  # type: ignore[assignment]
        tool = first.tools["create_ticket"]

        answered = decode(await asyncio.wait_for(first.call(tool, call), 5), ToolResult)
        assert (await entry(held, key)).state == "claimed"  # answered, not stored
        await asyncio.sleep(settings.tool_lease * 1.5)  # no renewal lands: the lease lapses
        reconciled = decode(await second.call(second.tools["create_ticket"], call), ToolResult)

        assert answered.status == reconciled.status == "succeeded"
        assert reconciled.refs == answered.refs  # the ticket the caller was told of
        assert first.journal.owner in reconciled.reconciled
        with sqlite3.connect(settings.tickets_path()) as db:
            assert db.execute("SELECT count(*) FROM tickets").fetchone() == (1,)
        held.gate.set()  # the first host comes back: it finds the key taken over
        await asyncio.wait_for(first.stop(), 5)
        stored = await entry(held, key)
        assert stored.state == "done" and stored.result == reconciled
        assert stored.unknown == [first.journal.owner]
    finally:
        await first_nc.close()
        await second_nc.close()
