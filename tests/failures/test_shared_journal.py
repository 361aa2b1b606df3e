"""Exactly-once side effects across tool hosts: the idempotency journal they share.

Two tool hosts run as separate OS processes (``claimcheck tools serve``), each with its
own state directory and the tool host's own NATS credentials, against a real
nats-server with the generated permissions, a real SMTP server and one ticket store.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import msgspec
import pytest
from nats.aio.client import Client

from bus.operations.mailbox import Mailbox
from bus.runtime.catalogue import Call
from bus.runtime.journal import Entry, bucket_key
from bus.runtime.tool_host import ToolHost
from bus.settings import Settings
from bus.tools import complaints
from bus.tools.tickets import Ticket, create_ticket
from bus.transport.auth import authorization_config, ensure_credentials
from bus.transport.connection import connect, ensure_streams
from bus.transport.server import EmbeddedNats
from bus.transport.signing import Signer, runtime_signer, signed_bytes
from bus.transport.subjects import Subjects
from handoff_schemas import ToolCall, ToolResult, decode, encode

SUBJECTS = Subjects("cc")
LEASE = 1.0


@dataclass
class Hosts:
    """Two tool host processes of one deployment, and the runtime's connection to them."""

    nats: EmbeddedNats
    runtime: Client
    mailbox: Mailbox
    tickets: Path
    logs: list[Path]
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    signer: Signer | None = None

    async def call(self, tool: str, call: ToolCall) -> ToolResult:
        """Send ``call`` as the runtime does: with an expiry and the runtime's signature."""
        assert self.signer is not None
        call.expires_at = datetime.now(UTC) + timedelta(seconds=60)
        call.signature = self.signer.sign(signed_bytes(msgspec.to_builtins(call)))
        msg = await self.runtime.request(SUBJECTS.tool(tool), encode(call), timeout=15)
        return decode(msg.data, ToolResult)

    def ticket_count(self) -> int:
        with sqlite3.connect(self.tickets) as db:
            return db.execute("SELECT count(*) FROM tickets").fetchone()[0]

    async def journal(self, key: str) -> Entry:
        kv = await self.runtime.jetstream().key_value(SUBJECTS.journal_bucket)
        found = await kv.get(bucket_key(key))
        assert found.value is not None
        return msgspec.json.decode(found.value, type=Entry)

    async def recorded(self, key: str) -> Entry:
        """The entry once its result is stored: a host answers first and stores meanwhile."""
        async with asyncio.timeout(10):
            while (entry := await self.journal(key)).state == "claimed":  # noqa: ASYNC110 (polls the bucket)
                await asyncio.sleep(0.05)
        return entry


async def start_host(
    tmp_path: Path, index: int, environment: dict[str, str]
) -> tuple[asyncio.subprocess.Process, Path]:
    log = tmp_path / f"tools-{index}.log"
    state = tmp_path / f"host-{index}"
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bus.operations.cli",
            "tools",
            "serve",
            stdout=out,
            stderr=out,
            env={**os.environ, **environment, "CLAIMCHECK_STATE_DIR": str(state)},
        )
    async with asyncio.timeout(30):
        while "tool host serving" not in log.read_text():
            if process.returncode is not None:
                raise RuntimeError(f"tool host exited:\n{log.read_text()}")
            await asyncio.sleep(0.05)
    return process, log


@pytest.fixture
async def hosts(tmp_path: Path, mailbox: Mailbox) -> AsyncIterator[Hosts]:
    credentials = ensure_credentials(tmp_path / "credentials", ["runtime", "tools"])
    authorization = authorization_config(credentials, SUBJECTS)
    server = EmbeddedNats(tmp_path / "nats", authorization=authorization)
    await server.start()
    runtime = await connect(Settings(nats_url=server.url, credentials=credentials["runtime"]), "rt")
    await ensure_streams(runtime.jetstream(), SUBJECTS)  # the runtime creates the journal bucket
    tickets = tmp_path / "tickets.db"
    signer = runtime_signer(Settings(state_dir=tmp_path / "runtime", nats_url=server.url))
    environment = {
        "CLAIMCHECK_RUNTIME_PUBLIC_KEY": signer.public_key,  # hosts run only signed calls
        "CLAIMCHECK_NATS_URL": server.url,
        "CLAIMCHECK_CREDENTIALS": str(credentials["tools"]),
        "CLAIMCHECK_SMTP_PORT": str(mailbox.port),
        "CLAIMCHECK_TICKETS_DB": str(tickets),
        "CLAIMCHECK_TOOL_LEASE": str(LEASE),
    }
    running = Hosts(server, runtime, mailbox, tickets, [], signer=signer)
    try:
        for index in range(2):
            process, log = await start_host(tmp_path, index, environment)
            running.processes.append(process)
            running.logs.append(log)
        yield running
    finally:
        for process in running.processes:
            if process.returncode is None:
                process.terminate()
        for process in running.processes:
            await process.wait()
        await runtime.close()
        await server.stop()


def email_call(key: str) -> ToolCall:
    payload = {"to": "ops@acme.example", "subject": "outage", "body": "call the customer"}
    return ToolCall(idempotency_key=key, workflow_id="wf", actor="notifier", payload=payload)


def ticket_call(key: str) -> ToolCall:
    payload = {"customer": "contoso", "title": "outage", "severity": "high"}
    return ToolCall(idempotency_key=key, workflow_id="wf", actor="triage", payload=payload)


async def test_the_same_call_on_two_hosts_at_once_has_one_effect(hosts: Hosts) -> None:
    email_key, ticket_key = f"wf/{uuid4().hex}/1", f"wf/{uuid4().hex}/2"
    hosts.mailbox.rcpt_delays.append(1.0)  # the first exchange is in flight while others arrive
    replies: list[ToolResult] = []
    for _ in range(3):  # concurrently, and again after the first result is recorded
        replies += await asyncio.gather(
            *(hosts.call("send_email", email_call(email_key)) for _ in range(8)),
            *(hosts.call("create_ticket", ticket_call(ticket_key)) for _ in range(8)),
        )

    emails = [r for r in replies if "messageId" in r.refs]
    tickets = [r for r in replies if "ticketId" in r.refs]
    assert len(emails) == len(tickets) == 24, replies
    assert {r.status for r in replies} == {"succeeded"}
    assert len({r.refs["messageId"] for r in emails}) == 1
    assert len({r.refs["ticketId"] for r in tickets}) == 1
    assert len(hosts.mailbox.received) == 1
    assert hosts.ticket_count() == 1
    # The same key reached both processes (the queue group spreads the calls), and exactly
    # one of them ran the effect.
    for log in hosts.logs:
        assert email_key in log.read_text()
    executed = [log.read_text().count(f"send_email executed for {email_key}") for log in hosts.logs]
    assert sorted(executed) == [0, 1]
    entry = await hosts.recorded(email_key)
    assert entry.state == "done" and entry.attempts == 1 and entry.unknown == []


async def test_a_host_killed_mid_effect_leaves_an_unknown_outcome_the_next_host_reconciles(
    hosts: Hosts,
) -> None:
    key = f"wf/{uuid4().hex}/1"
    hosts.mailbox.rcpt_delays.append(5.0)  # the first SMTP exchange stalls at RCPT
    first = asyncio.create_task(hosts.call("send_email", email_call(key)))
    await asyncio.to_thread(hosts.mailbox.rcpt_seen.wait, 10)
    claim = await hosts.journal(key)
    assert claim.state == "claimed"
    [owner] = [p for p in hosts.processes if f"-{p.pid}-" in claim.owner]
    owner.kill()  # SIGKILL mid-exchange: no result in the journal, the outcome is unknown
    await owner.wait()
    first.cancel()

    started = time.monotonic()
    result = await hosts.call("send_email", email_call(key))
    assert time.monotonic() - started >= LEASE * 0.5  # waited for the dead owner's lease
    assert result.status == "succeeded"
    assert "outcome unknown" in result.reconciled
    entry = await hosts.recorded(key)
    assert entry.state == "done" and entry.unknown == [claim.owner] and entry.attempts == 2
    # The second delivery carries the Message-ID derived from the key, by which a receiver
    # drops a duplicate; here the first exchange never reached DATA, so there is one email.
    expected = f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@claimcheck>"
    assert [m["Message-ID"] for m in hosts.mailbox.received] == [expected]
    assert result.refs["messageId"] == expected
    again = await hosts.call("send_email", email_call(key))
    assert again == result and len(hosts.mailbox.received) == 1


async def test_a_ticket_inserted_before_a_crash_is_returned_not_filed_again(
    tmp_path: Path, nats_server: EmbeddedNats, mailbox: Mailbox
) -> None:
    """The ticket store's unique idempotency key reconciles an unknown outcome exactly."""
    settings = Settings(
        state_dir=tmp_path / "state",
        nats_url=nats_server.url,
        smtp_port=mailbox.port,
        tool_lease=LEASE,
    )
    nc = await connect(settings, "test")
    try:
        await ensure_streams(nc.jetstream(), SUBJECTS)
        host = ToolHost(settings, [complaints])
        await host.serve(nc)
        key = f"wf/{uuid4().hex}/1"
        payload = Ticket(customer="contoso", title="outage", severity="high")
        # A host inserted the ticket and died before recording the result: its claim remains.
        first = await create_ticket(payload, Call(key, "wf", "triage", settings))
        kv = await nc.jetstream().key_value(SUBJECTS.journal_bucket)
        orphan = Entry(key, "claimed", "dead-host", lease_until=time.time() - 1)
        await kv.create(bucket_key(key), msgspec.json.encode(orphan))

        result = decode(await host.call(host.tools["create_ticket"], ticket_call(key)), ToolResult)
        assert result.status == "succeeded"
        # found by the tool's reconcile (its unique key), not filed again
        assert result.refs == {"ticketId": first.ticket_id}
        assert "dead-host" in result.reconciled
        with sqlite3.connect(settings.tickets_path()) as db:
            rows = db.execute("SELECT idempotency_key FROM tickets").fetchall()
        assert rows == [(key,)]
        assert host.journal is not None
        await host.journal.recorded()  # answered first, stored meanwhile
        entry = msgspec.json.decode((await kv.get(bucket_key(key))).value or b"", type=Entry)
        assert entry.unknown == ["dead-host"] and entry.result == result
    finally:
        await nc.close()


def test_the_journal_entry_is_plain_json() -> None:
    """Operators read the journal with the nats CLI: the entry names its key and owner."""
    entry = Entry("wf/h/1", "claimed", "host-1", 1.0)
    assert json.loads(msgspec.json.encode(entry))["leaseUntil"] == 1.0


async def test_a_slow_effect_keeps_its_claim_past_the_lease(hosts: Hosts) -> None:
    """The owner renews its lease while it acts: a slow SMTP server is not a dead host."""
    key = f"wf/{uuid4().hex}/1"
    hosts.mailbox.rcpt_delays.append(LEASE * 3)
    results = await asyncio.gather(*(hosts.call("send_email", email_call(key)) for _ in range(6)))
    assert {r.refs["messageId"] for r in results} == {results[0].refs["messageId"]}
    assert all(r.reconciled == "" for r in results)
    assert len(hosts.mailbox.received) == 1
    entry = await hosts.recorded(key)
    assert entry.state == "done" and entry.attempts == 1 and entry.unknown == []
