"""The agent's only line to the system: request/reply to the runtime over NATS."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from nats.aio.client import Client
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from bus import telemetry
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
        pause = 0.1
        while True:
            try:
                msg = await self.nc.request(
                    subject, data, timeout=self.timeout, headers=telemetry.headers()
                )
            except (NoRespondersError, NatsTimeout, ConnectionClosedError):
                if asyncio.get_running_loop().time() + pause > deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            return unwrap(decode(msg.data, Reply), into)
