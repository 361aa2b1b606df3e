"""Calling a tool host, and waiting out a host that is briefly unavailable.

No responders (no host subscribed: one is restarting), a timeout (a host died
mid-call, or waits on another host's claim) and a lost NATS connection say
nothing about the tool: the call is asked again, with the same idempotency key,
after an exponential backoff with jitter (so restarted hosts are not hit by
every runtime at once), until the availability window
(``CLAIMCHECK_TOOL_AVAILABILITY_WINDOW``) has passed. Each attempt that found
no host is a ``ToolUnavailable`` event, with the time the runtime asks again
and the end of the window; only when the window is over does the failure
table (``tool_timeout``, ``tool_error``) see a failure.

The window is measured from the first call of one execution of a step, in the
replica that runs it; concurrent requests for the same step in one replica
share that execution (see :meth:`bus.runtime.execution.ToolExecution.run_tool`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import msgspec
from nats.aio.client import Client
from nats.errors import (
    ConnectionClosedError,
    ConnectionDrainingError,
    ConnectionReconnectingError,
    NoRespondersError,
    OutboundBufferLimitError,
    StaleConnectionError,
)
from nats.errors import TimeoutError as NatsTimeout
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_before_delay,
    wait_exponential_jitter,
)

from bus import telemetry
from bus.ledger import Workflow
from bus.ledger.errors import WorkflowClosed
from bus.runtime.steps import Steps
from bus.settings import Settings
from bus.transport.signing import Signer, signed_bytes
from bus.transport.subjects import Subjects
from handoff_schemas import ToolCall, ToolResult, decode, encode

FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 5.0
JITTER_SECONDS = 0.5
CONNECTION_ERRORS = (
    ConnectionClosedError,
    ConnectionDrainingError,
    ConnectionReconnectingError,
    OutboundBufferLimitError,
    StaleConnectionError,
)


T = TypeVar("T")


class InFlight(Generic[T]):
    """Runs keyed by step: a request for a step already running joins that run.

    Without it, an agent asking again while the runtime waits out a tool host would
    start a second window of calls beside the first.
    """

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Future[T]] = {}

    async def join(self, key: str, start: Callable[[], Awaitable[T]]) -> T:
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(start())
            self._running[key] = running
            running.add_done_callback(lambda _: self._running.pop(key, None))
        return await asyncio.shield(running)  # a caller that gives up leaves the run going


class ToolUnavailable(Exception):
    """No answer from a tool host: ``kind`` is the failure table's kind once the window is over."""

    def __init__(self, kind: str, cause: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.cause = cause


class ToolCaller:
    """One step's calls to the tool hosts, counted, with the window around them."""

    def __init__(
        self,
        nc: Client,
        steps: Steps,
        settings: Settings,
        agent: str,
        workflow_id: str,
        step_key: str,
        action: dict[str, Any],
        signer: Signer,
    ) -> None:
        self.signer = signer  # every call carries the runtime's signature and an expiry
        self.nc = nc
        self.steps = steps
        self.settings = settings  # read per call: the timeouts may be tuned while serving
        self.subjects = Subjects(settings.prefix)
        self.agent = agent
        self.workflow_id = workflow_id
        self.step_key = step_key
        self.action = action
        self.attempts = 0
        self.last_duration_ms = 0.0
        self.window_ends = time.monotonic() + settings.tool_availability_window
        self.window_ends_at = datetime.now(UTC) + timedelta(
            seconds=settings.tool_availability_window
        )

    async def call(self, permission: str) -> ToolResult:
        """An answer from a tool host; :class:`ToolUnavailable` once the window is over."""
        return await self._within_window(lambda: self._call_once(permission))

    async def registered(self, lookup: Callable[[], Awaitable[T | None]]) -> T:
        """What ``lookup`` finds once a tool host has registered the tool (one may be
        starting); each look that finds nothing is a ``ToolUnavailable`` event, and after
        the window, :class:`ToolUnavailable`."""

        async def look() -> T:
            self.attempts += 1
            found = await lookup()
            if found is None:
                tool = self.action["tool"]
                raise ToolUnavailable("tool_error", "not_registered", f"no tool host serves {tool}")
            return found

        return await self._within_window(look)

    async def _within_window(self, attempt_once: Callable[[], Awaitable[T]]) -> T:
        """``attempt_once`` until it is answered or the window is over. The first attempt runs
        before the retry loop is built (17-21 µs and a reference cycle per tool call, for a
        loop nearly every call leaves at once); its failure is the loop's first attempt."""
        try:
            return await attempt_once()
        except ToolUnavailable as unavailable:
            first: ToolUnavailable | None = unavailable
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(ToolUnavailable),
            stop=stop_before_delay(max(0.0, self.window_ends - time.monotonic())),
            wait=wait_exponential_jitter(
                multiplier=FIRST_BACKOFF_SECONDS, max=MAX_BACKOFF_SECONDS, jitter=JITTER_SECONDS
            ),
            before_sleep=self._record_unavailable,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if first is not None:  # the attempt above, as the loop's first
                    failed, first = first, None
                    raise failed
                return await attempt_once()
        raise AssertionError("unreachable: tenacity re-raises the last ToolUnavailable")

    async def _call_once(self, permission: str) -> ToolResult:
        self.attempts += 1
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": self.action["tool"],
            "gen_ai.agent.name": self.agent,
            "claimcheck.attempt": self.attempts,
            "claimcheck.permission": permission,
        }
        started = time.monotonic()
        try:
            with telemetry.span(f"execute_tool {self.action['tool']}", **attributes):
                return await self._request()
        finally:
            self.last_duration_ms = (time.monotonic() - started) * 1000

    async def _request(self) -> ToolResult:
        """One call to a tool host, with the step's idempotency key."""
        call = ToolCall(
            idempotency_key=f"{self.workflow_id}/{self.step_key}",
            workflow_id=self.workflow_id,
            actor=self.agent,
            payload=self.action["payload"],
            expires_at=datetime.now(UTC) + timedelta(seconds=2 * self.settings.tool_timeout + 5),
        )
        call.signature = self.signer.sign(signed_bytes(msgspec.to_builtins(call)))
        timeout = self.settings.tool_timeout
        try:
            msg = await self.nc.request(
                self.subjects.tool(self.action["tool"]),
                encode(call),
                timeout=timeout,
                headers=telemetry.headers(),
            )
        except NatsTimeout:
            message = f"no answer within {timeout}s"
            raise ToolUnavailable("tool_timeout", "timeout", message) from None
        except NoRespondersError:
            raise ToolUnavailable(
                "tool_error", "no_responders", f"no tool host serves {self.action['tool']}"
            ) from None
        except CONNECTION_ERRORS as error:
            raise ToolUnavailable(
                "tool_error", "connection", f"NATS connection: {type(error).__name__}"
            ) from None
        return decode(msg.data, ToolResult)

    async def _record_unavailable(self, state: RetryCallState) -> None:
        """The event for one attempt that found no host; a closed workflow stops the waiting."""
        assert state.outcome is not None and state.next_action is not None
        error = state.outcome.exception()
        assert isinstance(error, ToolUnavailable)
        delay = state.next_action.sleep

        def note(workflow: Workflow) -> None:
            if workflow.closed:  # failed, stopped or completed meanwhile: nothing to wait for
                raise WorkflowClosed(f"workflow {workflow.id} is {workflow.status}")
            workflow.note_tool_unavailable(
                self.agent,
                self.action["tool"],
                error.cause,
                str(error),
                self.attempts,
                round(delay, 3),
                self.window_ends_at.isoformat(),
                self.step_key,
            )

        await self.steps.command(self.workflow_id, note)
