"""The agent's only line to the system: request/reply to the runtime over NATS."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from nats.aio.client import Client
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from bus import telemetry
from bus.transport.retry import UNAVAILABLE, Unavailable, backoff, request_while_working
from bus.transport.subjects import Subjects
from handoff_schemas import ErrorInfo, Reply, WireStruct, convert, decode, encode

T = TypeVar("T")


class RuntimeRefused(Exception):
    """The runtime answered with a structured error."""

    def __init__(self, error: ErrorInfo) -> None:
        fields = "; ".join(f"{f.field}: {f.message}" for f in error.fields)
        super().__init__(f"{error.code}: {error.message}" + (f" ({fields})" if fields else ""))
        self.error = error

    @property
    def code(self) -> str:
        return self.error.code


def unwrap(reply: Reply, into: type[T]) -> T:
    if not reply.ok:
        assert reply.error is not None
        raise RuntimeRefused(reply.error)
    return convert(reply.result, into)


class RuntimeClient:
    """Asks the runtime, and keeps asking while it is unreachable.

    A runtime restart or a NATS reconnect is a pause, not a failure: every
    request that changes a workflow carries a step key, so asking again is safe.
    After ``patience`` seconds without an answer the last error is raised.
    """

    def __init__(
        self, nc: Client, subjects: Subjects, agent: str, timeout: float, patience: float = 60.0
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.agent = agent
        self.timeout = timeout
        self.patience = patience

    async def call(self, op: str, request: WireStruct, into: type[T]) -> T:
        subject, data = self.subjects.runtime(self.agent, op), encode(request)
        deadline = asyncio.get_running_loop().time() + self.patience
        attempt = 0
        while True:
            try:
                # Waits out a replica that says it is working (up to ``timeout``), not one
                # that went silent (killed mid-request): that is asked again within seconds.
                msg = await request_while_working(
                    self.nc, subject, data, self.timeout, telemetry.headers()
                )
                reply = decode(msg.data, Reply)
                if reply.error is not None and reply.error.code == UNAVAILABLE:
                    raise Unavailable(reply.error.message)
            except (NoRespondersError, NatsTimeout, ConnectionClosedError, Unavailable):
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            return unwrap(reply, into)
