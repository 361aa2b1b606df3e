"""What every request handler shares: the refusal it raises, how replies are built, and the
trace context of the request being handled.

A handler answers by returning a result or raising :class:`Refusal`; the service turns
either into a :class:`~handoff_schemas.Reply`, so a caller never sees a stack trace.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import msgspec

from bus.ledger import LedgerError
from handoff_schemas import ErrorInfo, FieldError, Reply, RetryAdvice

Handler = Callable[[str, Any], Awaitable[Any]]
"""One operation: ``(calling agent, decoded request) -> result``."""

INCOMING_TRACE: ContextVar[str] = ContextVar("incoming_traceparent", default="")
"""The W3C traceparent of the request being handled (each request is its own task)."""


class Refusal(LedgerError):
    """A request the runtime answers with a structured error."""

    def __init__(
        self,
        code: str,
        message: str,
        fields: list[FieldError] | None = None,
        retry: RetryAdvice | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.fields = fields or []
        self.retry = retry


def error_reply(
    code: str,
    message: str,
    fields: list[FieldError] | None = None,
    retry: RetryAdvice | None = None,
) -> Reply:
    return Reply(
        ok=False, error=ErrorInfo(code=code, message=message, fields=fields or [], retry=retry)
    )


def as_reply(error: LedgerError) -> Reply:
    return error_reply(
        error.code, str(error), getattr(error, "fields", None), getattr(error, "retry", None)
    )


def ok_reply(result: Any) -> dict[str, Any]:
    return msgspec.to_builtins(Reply(ok=True, result=msgspec.to_builtins(result)))


def replayed(reply: Reply) -> Any:
    """A recorded reply again: its result, or its refusal raised again."""
    if reply.error is not None:
        error = reply.error
        raise Refusal(error.code, error.message, list(error.fields), error.retry)
    return reply.result
