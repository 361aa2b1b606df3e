"""Item 1 of issue 12: least privilege at the server.

A compromised agent (``mallory``), a plain NATS client holding its real credentials, may
ask the runtime and fetch and acknowledge its own inbox, and nothing else: every way
around the runtime the issue found is refused by nats-server itself, and artifacts are
read and written through the runtime, which checks that the caller takes part.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from agents import Agent, Context, ScriptedModel
from bus.operations.mailbox import Mailbox
from bus.operations.operators import watch
from bus.transport.artifacts import ArtifactStore, artifact_id
from handoff_schemas.limits import MAX_ARTIFACT_BYTES
from tests.security.conftest import COMPLAINT, SecureBus

REFUSED = (NatsError, TimeoutError)
"""A publish the server refuses is dropped (and reported to the client's error callback):
a JetStream API request the agent may not make times out unanswered."""

ARTIFACTS = "OBJ_cc-artifacts"


async def consumer_names(bus: SecureBus, stream: str) -> set[str]:
    return {c.name for c in await bus.nc.jetstream().consumers_info(stream)}


async def inbox_made(bus: SecureBus, agent: str) -> None:
    """Wait for the relay to make ``agent``'s inbox consumer (before its first handoff)."""
    for _ in range(100):
        if f"agent-{agent}" in await consumer_names(bus, "CC_HANDOFF"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no inbox consumer for {agent}")


def first_artifact(bus: SecureBus, workflow_id: str) -> str:
    return next(
        e.data["handoff"]["artifactId"]
        for e in bus.ledger.history(workflow_id)
        if e.type == "HandoffSent"
    )


async def two_workflows(bus: SecureBus) -> tuple[str, str, Client]:
    """A workflow handed to triage, one handed to mallory, and mallory's connection."""
    foreign, own = await bus.start(to="triage"), await bus.start(to="mallory")
    return foreign, own, await bus.connect("agent-mallory")


async def artifact_get(bus: SecureBus, client: Client, agent: str, **fields: Any) -> Any:
    return await bus.ask(client, agent, "artifact_get", fields)


@pytest.mark.parametrize(
    ("stream", "deliver"),
    [
        ("CC_HANDOFF", "cc.tool.send_email"),  # the redirection, on another stream
        (ARTIFACTS, "cc.tool.send_email"),
        ("CC_EVIDENCE", "cc.audit.evidence"),  # forged records on the auditor's feed
        ("CC_HANDOFF", None),  # a pull consumer of its own (on another agent's inbox)
    ],
)
async def test_an_agent_creates_no_consumer(
    secure_bus: SecureBus, mailbox: Mailbox, stream: str, deliver: str | None
) -> None:
    await secure_bus.start(to="triage")  # something on the streams to deliver
    before = await consumer_names(secure_bus, stream)
    js = (await secure_bus.connect("agent-mallory")).jetstream(timeout=1)
    config = ConsumerConfig(
        durable_name="mallory-own",
        deliver_subject=deliver,
        filter_subject="cc.handoff.triage" if stream == "CC_HANDOFF" else None,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE if deliver else AckPolicy.EXPLICIT,
    )
    with pytest.raises(REFUSED):
        await js.add_consumer(stream, config)
    with pytest.raises(REFUSED):  # nor an ephemeral, ordered one
        await js.subscribe("cc.>", stream=stream, ordered_consumer=True)
    await asyncio.sleep(0.3)
    made_by_the_relay = {"agent-triage"}  # the inbox of the workflow started above
    assert await consumer_names(secure_bus, stream) - made_by_the_relay == before
    assert mailbox.received == []


async def test_an_agent_cannot_write_the_object_store(secure_bus: SecureBus) -> None:
    workflow_id = await secure_bus.start(to="triage")
    victim = first_artifact(secure_bus, workflow_id)
    before = (await secure_bus.nc.jetstream().stream_info(ARTIFACTS)).state.messages
    mallory = await secure_bus.connect("agent-mallory")

    with pytest.raises(REFUSED):  # the object-store client: it cannot even look the bucket up
        store = await mallory.jetstream(timeout=1).object_store("cc-artifacts")
        await store.put(victim, b"overwritten")
    # raw publishes: overwrite the victim's metadata, and a rollup that would wipe it all
    meta = base64.urlsafe_b64encode(victim.encode()).decode()
    await mallory.publish(f"$O.cc-artifacts.M.{meta}", b'{"name": "x", "size": 1}')
    await mallory.publish("$O.cc-artifacts.C.x", b"junk", headers={"Nats-Rollup": "all"})
    await mallory.flush()
    await asyncio.sleep(0.3)

    assert (await secure_bus.nc.jetstream().stream_info(ARTIFACTS)).state.messages == before
    fresh = ArtifactStore(secure_bus.nc, "cc-artifacts")  # no cache: the store
    assert await fresh.get(victim) == COMPLAINT


async def test_an_agent_sees_no_stream_or_account_information(secure_bus: SecureBus) -> None:
    js = (await secure_bus.connect("agent-mallory")).jetstream(timeout=1)
    for look in (
        lambda: js.account_info(),
        lambda: js.stream_info("CC_HANDOFF"),
        lambda: js.stream_info(ARTIFACTS),
        lambda: js.consumer_info("CC_HANDOFF", "agent-mallory"),
        lambda: js.streams_info(),
    ):
        with pytest.raises(REFUSED):
            await look()


async def test_an_agent_fetches_and_acknowledges_its_own_inbox_only(
    secure_bus: SecureBus,
) -> None:
    await secure_bus.start(to="mallory")
    await secure_bus.start(to="triage")
    await inbox_made(secure_bus, "mallory")
    await inbox_made(secure_bus, "triage")
    js = (await secure_bus.connect("agent-mallory")).jetstream(timeout=1)
    own = await js.pull_subscribe_bind("agent-mallory", "CC_HANDOFF")
    (msg,) = await own.fetch(1, timeout=5)
    assert json.loads(msg.data)["to"] == "mallory"
    await msg.ack_sync()
    theirs = await js.pull_subscribe_bind("agent-triage", "CC_HANDOFF")
    with pytest.raises(REFUSED):
        await theirs.fetch(1, timeout=1)
    info = await secure_bus.nc.jetstream().consumer_info("CC_HANDOFF", "agent-triage")
    assert (info.num_pending, info.num_ack_pending) == (1, 0)  # still waiting for triage


async def test_artifacts_are_read_through_the_runtime_by_who_takes_part(
    secure_bus: SecureBus,
) -> None:
    foreign, own, mallory = await two_workflows(secure_bus)
    secret = first_artifact(secure_bus, foreign)

    mine = await artifact_get(
        secure_bus, mallory, "mallory", artifactId=first_artifact(secure_bus, own), workflowId=own
    )
    assert mine.ok and base64.b64decode(mine.result["data"]) == COMPLAINT
    for fields in (
        {"artifactId": secret, "workflowId": foreign},  # a workflow it takes no part in
        {"artifactId": secret},  # no workflow at all: only the operator may
    ):
        refused = await artifact_get(secure_bus, mallory, "mallory", **fields)
        assert (refused.ok, refused.error.code) == (False, "permission_denied")
    # its own workflow does not refer to that artifact: the id alone opens nothing
    other = COMPLAINT + b" "
    operator = await secure_bus.connect("cli")
    put = await secure_bus.ask(
        operator, "cli", "artifact_put", {"data": base64.b64encode(other).decode()}
    )
    refused = await artifact_get(
        secure_bus, mallory, "mallory", artifactId=put.result["artifactId"], workflowId=own
    )
    assert (refused.ok, refused.error.code) == (False, "permission_denied")
    assert "customer" not in json.dumps(refused.error.message)
    kinds = [e["kind"] for e in await secure_bus.security_entries("mallory", expected=3)]
    assert kinds == ["not_a_participant", "no_workflow", "not_a_participant"]


async def test_artifacts_are_stored_through_the_runtime_in_a_workflow_of_the_caller(
    secure_bus: SecureBus,
) -> None:
    foreign, own, mallory = await two_workflows(secure_bus)
    data = base64.b64encode(b"my notes").decode()

    stored = await secure_bus.ask(
        mallory, "mallory", "artifact_put", {"data": data, "workflowId": own}
    )
    assert stored.ok and stored.result == {"artifactId": artifact_id(b"my notes"), "size": 8}
    for fields in ({"data": data, "workflowId": foreign}, {"data": data}):
        refused = await secure_bus.ask(mallory, "mallory", "artifact_put", fields)
        assert (refused.ok, refused.error.code) == (False, "permission_denied")
    too_big = base64.b64encode(b"x" * (MAX_ARTIFACT_BYTES + 1)).decode()
    refused = await secure_bus.ask(
        mallory, "mallory", "artifact_put", {"data": too_big, "workflowId": own}
    )
    assert (refused.ok, refused.error.code) == (False, "invalid_request")
    assert refused.error.fields[0].field in ("data", "$")
    bad = await secure_bus.ask(
        mallory, "mallory", "artifact_get", {"artifactId": "../etc", "workflowId": own}
    )
    assert (bad.ok, bad.error.code, bad.error.fields[0].field) == (
        False,
        "invalid_request",
        "artifactId",
    )


async def test_honest_agents_work_with_nothing_but_their_rights(secure_bus: SecureBus) -> None:
    """Two agents holding their own credentials: one reads its input and hands a new artifact
    on, the other reads that artifact; both through the runtime, their inboxes made for them."""
    triage, notifier = Agent("triage", ScriptedModel([])), Agent("notifier", ScriptedModel([]))
    read: list[bytes] = []

    @triage.task("triage_complaint")
    async def hand_on(ctx: Context) -> None:
        read.append(ctx.artifact)
        await ctx.handoff("notifier", "notify", b'{"ticket": 1}', status="new", scope="s")

    @notifier.task("notify")
    async def notify(ctx: Context) -> None:
        read.append(ctx.artifact)
        await ctx.checkpoint("notified")

    stop = asyncio.Event()
    runners = [
        asyncio.create_task(
            agent.run(
                secure_bus.settings.model_copy(
                    update={"credentials": secure_bus.credentials[f"agent-{agent.name}"]}
                ),
                stop,
            )
        )
        for agent in (triage, notifier)
    ]
    try:
        workflow_id = await secure_bus.start(to="triage")
        operator = await secure_bus.connect("cli")
        await watch(
            operator,
            secure_bus.subjects,
            workflow_id,
            timeout=20,
            until=lambda view: "notified" in view.checkpoints,
        )
    finally:
        stop.set()
        await asyncio.gather(*runners)
    assert read == [COMPLAINT, b'{"ticket": 1}']


async def test_reads_through_the_runtime_create_no_consumer_each_time(
    secure_bus: SecureBus,
) -> None:
    """Artifacts never change, so the runtime serves repeated reads from memory: an
    object-store read creates a JetStream consumer, and one per read does not keep up."""
    created: list[str] = []

    async def count(msg: Any) -> None:
        created.append(msg.subject)

    advisories = f"$JS.EVENT.ADVISORY.CONSUMER.CREATED.{ARTIFACTS}.>"
    await secure_bus.nc.subscribe(advisories, cb=count)
    _, own, mallory = await two_workflows(secure_bus)
    fresh = ArtifactStore(secure_bus.nc, "cc-artifacts")
    await fresh.get(first_artifact(secure_bus, own))  # what an uncached read costs: one
    await secure_bus.nc.flush()
    await asyncio.sleep(0.2)
    assert len(created) == 1
    for _ in range(20):
        read = await artifact_get(
            secure_bus,
            mallory,
            "mallory",
            artifactId=first_artifact(secure_bus, own),
            workflowId=own,
        )
        assert read.ok
    await asyncio.sleep(0.2)
    assert len(created) == 1


async def test_the_cache_keeps_the_most_recently_used_within_its_bytes(
    secure_bus: SecureBus,
) -> None:
    store = ArtifactStore(secure_bus.nc, "cc-artifacts", cache_bytes=10)
    first, second = await store.put(b"12345"), await store.put(b"67890")
    await store.get(first)  # now the most recently used
    await store.put(b"abc")  # over 10 bytes: the least recently used goes
    assert list(store._cache) == [first, artifact_id(b"abc")]
    assert await store.get(second) == b"67890"  # read again from the store
    await store.put(b"x" * 11)  # larger than the whole cache: not kept
    assert artifact_id(b"x" * 11) not in store._cache


async def relayed(js: JetStreamContext, stream: str, subject: str) -> None:
    """Wait for the relay to publish ``subject``: it publishes what an event caused (the
    handoff) before the event, so nothing of the start arrives after this."""
    async with asyncio.timeout(10):
        while True:
            try:
                await js.get_last_msg(stream, subject)
                return
            except NotFoundError:
                await asyncio.sleep(0.05)


@pytest.mark.parametrize("kind", ["events", "evidence", "handoff", "escalation", "security"])
async def test_no_rights_delete_purge_or_roll_up_a_stream(secure_bus: SecureBus, kind: str) -> None:
    """Even the runtime's broad rights: what the relay published stays."""
    workflow_id = await secure_bus.start(to="triage")
    js, stream = secure_bus.nc.jetstream(), secure_bus.subjects.stream(kind)
    await relayed(js, secure_bus.subjects.stream("events"), f"cc.events.{workflow_id}.HandoffSent")
    subject = f"cc.{kind}.{workflow_id}" + (".X" if kind == "events" else "")
    ack = await js.publish(subject, b"{}")
    before = (await js.stream_info(stream)).state.messages
    with pytest.raises(NatsError):
        await js.purge_stream(stream)
    with pytest.raises(NatsError):
        await js.delete_msg(stream, ack.seq)
    with pytest.raises(NatsError):
        await js.publish(subject, b"{}", headers={"Nats-Rollup": "all"})
    assert (await js.stream_info(stream)).state.messages == before
    info = await js.stream_info(ARTIFACTS)
    assert info.config.deny_delete
    with pytest.raises(NatsError):  # an artifact's chunk stays
        await js.delete_msg(ARTIFACTS, info.state.first_seq)
