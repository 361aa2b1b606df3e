"""Connecting to NATS, and the streams every deployment needs.

Stream creation is idempotent, so every process may call :func:`ensure_streams`
at start-up and the first one to arrive creates them.
"""

from __future__ import annotations

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from bus.auth import Credentials
from bus.settings import Settings
from bus.subjects import Subjects

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
