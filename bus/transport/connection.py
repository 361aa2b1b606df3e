"""Connecting to NATS, and the streams every deployment needs.

Stream creation is idempotent, so every process may call :func:`ensure_streams`
at start-up and the first one to arrive creates them.
"""

from __future__ import annotations

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from bus.settings import Settings
from bus.transport.auth import Credentials
from bus.transport.subjects import Subjects

DUPLICATE_WINDOW_SECONDS = 3600.0
"""How long JetStream remembers a ``Nats-Msg-Id``: longer than any relay restart."""


async def connect(settings: Settings, name: str) -> Client:
    """A client that reconnects for ever: a restarted nats-server is a pause, not a crash.

    With credentials, it authenticates as their role and takes replies on that
    role's own inbox prefix, the only one its permissions let it read.
    """
    options: dict[str, object] = {}
    if settings.credentials:
        credentials = Credentials.load(settings.credentials)
        options = {
            "user": credentials.user,
            "password": credentials.password,
            "inbox_prefix": credentials.inbox_prefix,
        }
    return await nats.connect(
        servers=settings.nats_url.split(","),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        **options,
    )


def stream_configs(subjects: Subjects, replicas: int = 1) -> list[StreamConfig]:
    def stream(kind: str, pattern: str, retention: RetentionPolicy) -> StreamConfig:
        return StreamConfig(
            name=subjects.stream(kind),
            subjects=[f"{subjects.prefix}.{pattern}"],
            storage=StorageType.FILE,
            retention=retention,
            discard=DiscardPolicy.OLD,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            num_replicas=replicas,
        )

    return [
        stream("events", "events.>", RetentionPolicy.LIMITS),
        stream("evidence", "evidence.>", RetentionPolicy.LIMITS),
        stream("handoff", "handoff.>", RetentionPolicy.LIMITS),
        stream("escalation", "escalation.>", RetentionPolicy.LIMITS),
        stream("deadletter", "deadletter.>", RetentionPolicy.LIMITS),
        stream("security", "security.>", RetentionPolicy.LIMITS),
    ]


async def ensure_streams(js: JetStreamContext, subjects: Subjects, replicas: int = 1) -> None:
    for config in stream_configs(subjects, replicas):
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.update_stream(config)
    try:
        await js.object_store(subjects.artifact_bucket)
    except nats.js.errors.BucketNotFoundError:
        await js.create_object_store(
            subjects.artifact_bucket, storage=StorageType.FILE, replicas=replicas
        )
    await ensure_audit_feeds(js, subjects)


AUDIT_FEEDS = {"evidence": ("evidence", "evidence.>"), "claims": ("events", "events.*.ClaimMade")}
"""Audit feed name -> (stream kind, subject filter under the prefix)."""


async def ensure_audit_feeds(js: JetStreamContext, subjects: Subjects) -> None:
    """Push consumers that deliver to ``<prefix>.audit.<feed>``.

    The auditor may publish nothing, so it cannot create a consumer itself: it
    only subscribes to these deliver subjects. They replay from the first
    record, in stream order, and need no acks.
    """
    for feed, (kind, pattern) in AUDIT_FEEDS.items():
        config = ConsumerConfig(
            durable_name=f"auditor-{feed}",
            deliver_subject=subjects.audit(feed),
            filter_subject=f"{subjects.prefix}.{pattern}",
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
        )
        try:
            await js.consumer_info(subjects.stream(kind), config.durable_name)
        except NotFoundError:
            await js.add_consumer(subjects.stream(kind), config)
