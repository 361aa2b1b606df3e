"""The agent's only line to the system: request/reply to the runtime over NATS."""

from __future__ import annotations

from typing import TypeVar

from nats.aio.client import Client

from bus.subjects import Subjects
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
    def __init__(self, nc: Client, subjects: Subjects, agent: str, timeout: float) -> None:
        self.nc = nc
        self.subjects = subjects
        self.agent = agent
        self.timeout = timeout

    async def call(self, op: str, request: WireStruct, into: type[T]) -> T:
        msg = await self.nc.request(
            self.subjects.runtime(self.agent, op), encode(request), timeout=self.timeout
        )
        return unwrap(decode(msg.data, Reply), into)
