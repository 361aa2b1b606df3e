"""Connecting to NATS, and the streams every deployment needs.

Stream creation is idempotent, so every process may call :func:`ensure_streams`
at start-up and the first one to arrive creates them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass

import nats
from nats.aio.client import Client
from nats.errors import ConnectionClosedError, NoServersError
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
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from bus.settings import Settings
from bus.transport.auth import Credentials, agent_role
from bus.transport.lease import ensure_lease_bucket
from bus.transport.subjects import Subjects

log = logging.getLogger(__name__)

IMPATIENT_CONNECT_SECONDS = 10.0
"""The longest a command a person waits for may take to connect."""

DUPLICATE_WINDOW_SECONDS = 3600.0
"""How long JetStream remembers a ``Nats-Msg-Id``: longer than any relay restart."""


class NoDeployment(ConnectionError):
    """The settings name no NATS server, or the server found is not the one they name."""


async def connect(settings: Settings, name: str, patient: bool = True) -> Client:
    """A client of the deployment the settings name, and of no other server.

    A patient client (a service) reconnects for ever: a restarted nats-server is a
    pause, not a crash. An impatient one (a command a person waits for) gives up after
    a second try. With credentials, it authenticates as their role and takes replies on
    that role's own inbox prefix, the only one its permissions let it read. With a CA
    (``CLAIMCHECK_NATS_CA``), it speaks TLS and accepts only servers that CA certified.
    """
    require_named(settings)
    options: dict[str, object] = {}
    if settings.credentials:
        options = Credentials.load(settings.credentials).connect_options()
    if settings.nats_ca:  # TLS, verified against the deployment's own CA
        options["tls"] = ssl.create_default_context(cafile=str(settings.nats_ca))
    if patient:
        watch = ConnectionLog(name)
        options.update(error_cb=watch.error, reconnected_cb=watch.regained)
    else:
        options["error_cb"] = _quiet  # the caller reports the failure itself
    try:
        # nats-py can wait for ever on a TLS handshake that failed: a person does not.
        async with asyncio.timeout(None if patient else IMPATIENT_CONNECT_SECONDS):
            nc = await nats.connect(
                servers=settings.nats_url.split(","),
                name=name,
                max_reconnect_attempts=-1 if patient else 1,
                reconnect_time_wait=0.2,
                **options,
            )
    except NoServersError:
        raise NoDeployment(
            f"nothing answers at {settings.nats_url}: is the stack for {settings.state_dir} "
            "running? (`claimcheck up` starts it)"
        ) from None
    except TimeoutError:
        raise NoDeployment(
            f"no server at {settings.nats_url} completed a connection within "
            f"{IMPATIENT_CONNECT_SECONDS:.0f} s (does it require TLS with a certificate that "
            "CLAIMCHECK_NATS_CA does not vouch for?)"
        ) from None
    await _check_identity(nc, settings)
    return nc


def require_named(settings: Settings) -> None:
    """There is no default server: the settings name one, or nothing is connected to."""
    if not settings.nats_url:
        raise NoDeployment(
            f"no NATS server is named: no `claimcheck up` is running for {settings.state_dir} "
            "(start it, or set CLAIMCHECK_NATS_URL)"
        )


async def flushed(nc: Client) -> None:
    """Return once the server has processed everything sent on ``nc`` before the call.

    nats-py's ``flush`` writes its PING straight to the socket, ahead of what its flusher
    task has not yet written (a SUB just made, a publish): its PONG can come back before
    the server has them, and a request another client sends at once then finds no
    responders (1 in 40 tries here). The second PING is written after the first kicked
    the flusher, so its PONG vouches for everything before it.
    """
    await nc.flush()
    await nc.flush()


async def _check_identity(nc: Client, settings: Settings) -> None:
    """Refuse a server other than the one ``claimcheck up`` recorded (a stale ``nats.url``)."""
    expected = settings.nats_server_name
    found = nc._server_info.get("server_name", "")  # the INFO the server sent on connect
    if expected and found != expected:
        await nc.close()
        raise NoDeployment(
            f"the server at {settings.nats_url} is {found!r}, not {expected!r} that "
            f"`claimcheck up` started for {settings.state_dir}: that stack is gone"
        )


async def _quiet(error: Exception) -> None:
    pass


class ConnectionLog:
    """A lost connection is logged at its first failed attempt, then at most once a minute
    while it stays lost: a client retrying five times a second must not fill the disk with
    the same line. A client's own close is not a loss, so it is not logged, nor is what
    nats-py's background tasks meet after it (an ordered consumer recreating itself finds
    the connection closed): a patient client never closes itself."""

    def __init__(self, name: str, every: float = 60.0) -> None:
        self.name = name
        self.every = every
        self.last_logged = -every
        self.unlogged = 0

    async def error(self, error: Exception) -> None:
        if isinstance(error, ConnectionClosedError):
            return
        now = time.monotonic()
        if now - self.last_logged < self.every:
            self.unlogged += 1
            return
        log.warning("%s: NATS: %s (%d more since the last report)", self.name, error, self.unlogged)
        self.last_logged, self.unlogged = now, 0

    async def regained(self) -> None:
        log.info("%s: reconnected to NATS", self.name)
        self.last_logged, self.unlogged = -self.every, 0


def stream_configs(subjects: Subjects, replicas: int = 1) -> list[StreamConfig]:
    """Every stream, with deleting and purging messages denied and rollup headers refused:
    what the relay published stays, whoever holds rights on the stream's subjects."""

    def stream(kind: str, pattern: str, retention: RetentionPolicy) -> StreamConfig:
        return StreamConfig(
            name=subjects.stream(kind),
            subjects=[f"{subjects.prefix}.{pattern}"],
            storage=StorageType.FILE,
            retention=retention,
            discard=DiscardPolicy.OLD,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            num_replicas=replicas,
            deny_delete=True,
            deny_purge=True,
            allow_rollup_hdrs=False,
            allow_atomic=True,  # the relay's batches (bus.transport.publishing)
        )

    return [
        stream("events", "events.>", RetentionPolicy.LIMITS),
        stream("evidence", "evidence.>", RetentionPolicy.LIMITS),
        stream("handoff", "handoff.>", RetentionPolicy.LIMITS),
        stream("escalation", "escalation.>", RetentionPolicy.LIMITS),
        stream("deadletter", "deadletter.>", RetentionPolicy.LIMITS),
        stream("security", "security.>", RetentionPolicy.LIMITS),
    ]


class NotInitialised(RuntimeError):
    """A deployment's set-up (``claimcheck init``) has not been done: a service says so
    and stops, rather than racing other replicas to do it."""


async def check_streams(js: JetStreamContext, subjects: Subjects) -> None:
    """Raise :class:`NotInitialised` unless every stream and bucket ``init`` makes exists."""
    missing = []
    for config in stream_configs(subjects):
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            missing.append(config.name)
    buckets = [subjects.journal_bucket, subjects.lease_bucket, subjects.registry_bucket]
    for bucket in (f"OBJ_{subjects.artifact_bucket}", *(f"KV_{kv}" for kv in buckets)):
        try:
            await js.stream_info(bucket)
        except NotFoundError:
            missing.append(bucket)
    if missing:
        raise NotInitialised(
            f"NATS is not set up for prefix {subjects.prefix!r} (missing {', '.join(missing)}):"
            " run `claimcheck init` once for this deployment"
        )


async def ensure_streams(js: JetStreamContext, subjects: Subjects, replicas: int = 1) -> None:
    for config in stream_configs(subjects, replicas):
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.update_stream(config)
    await ensure_artifact_bucket(js, subjects.artifact_bucket, replicas)
    # The tool hosts' idempotency journal (bus.runtime.journal) and the tool registry
    # they describe their tools in (bus.runtime.registry).
    await ensure_key_value(js, subjects.journal_bucket, "claimcheck tool journal", replicas)
    await ensure_key_value(js, subjects.registry_bucket, "claimcheck tool registry", replicas)
    await ensure_lease_bucket(js, subjects.lease_bucket, replicas)
    await ensure_audit_feeds(js, subjects)


async def ensure_artifact_bucket(js: JetStreamContext, bucket: str, replicas: int = 1) -> None:
    """The object store of artifacts, with deleting messages denied.

    An object store needs purging and rollups (each object's metadata is a rollup), so
    those stay allowed on it; only the runtime may write it (see :mod:`bus.transport.auth`).
    """
    try:
        await js.object_store(bucket)
    except nats.js.errors.BucketNotFoundError:
        await js.create_object_store(bucket, storage=StorageType.FILE, replicas=replicas)
    config = (await js.stream_info(f"OBJ_{bucket}")).config
    if not config.deny_delete:
        config.deny_delete = True
        await js.update_stream(config)


@dataclass(frozen=True)
class InboxConfig:
    """How an agent's inbox consumer delivers: set by the runtime, not by the agent."""

    ack_wait: float = 10.0
    max_deliver: int = 5

    @classmethod
    def of(cls, settings: Settings) -> InboxConfig:
        return cls(settings.inbox_ack_wait, settings.inbox_max_deliver)


async def ensure_inbox_consumer(
    js: JetStreamContext, subjects: Subjects, agent: str, inbox: InboxConfig | None = None
) -> None:
    """Create ``agent``'s inbox consumer (durable ``agent-<name>``) unless it exists.

    Agents may only fetch from and acknowledge it: a consumer an agent could create
    itself could deliver anything anywhere (a push consumer's deliver subject is not
    checked against its creator's rights). The relay calls this before the first
    handoff to an agent; a deployment's set-up may call it for agents it knows.
    """
    stream, durable = subjects.stream("handoff"), agent_durable(agent)
    inbox = inbox or InboxConfig()
    try:
        await js.consumer_info(stream, durable)
        return  # made before (perhaps configured otherwise): it stays as it is
    except NotFoundError:
        pass
    config = ConsumerConfig(
        durable_name=durable,
        filter_subject=subjects.inbox(agent),
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=inbox.ack_wait,
        max_deliver=inbox.max_deliver,
    )
    try:
        await js.add_consumer(stream, config)
    except BadRequestError:
        # Another runtime replica made it between our look and our add, configured
        # otherwise: it is there, which is all we wanted (else this raises again).
        await js.consumer_info(stream, durable)


def agent_durable(agent: str) -> str:
    """The durable name of ``agent``'s inbox consumer: its role's name."""
    return agent_role(agent)


INBOX_MISSING = (NotFoundError, ServiceUnavailableError)
"""What fetching from an inbox consumer that does not exist yet raises."""


async def ensure_key_value(
    js: JetStreamContext, bucket: str, description: str, replicas: int = 1
) -> None:
    """A key-value bucket the services share, keeping one value per key.

    Only the runtime creates these: tool hosts may read and write their keys, nothing else.
    """
    try:
        await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        await js.create_key_value(
            bucket=bucket,
            description=description,
            history=1,
            storage=StorageType.FILE,
            replicas=replicas,
        )


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
