"""The runtime: the trusted service agents ask, and the only writer of the ledger.

Requests arrive on ``<prefix>.rt.<agent>.<op>``; the ``<agent>`` token is who is
asking. This module receives and decodes them and hands each to the handler of its
concern; every outcome, a crash included, becomes a structured reply.

- :mod:`bus.runtime.workflows`: start, state, handoffs;
- :mod:`bus.runtime.pipeline`: intent, context, reasoning, checkpoints, audit notes;
- :mod:`bus.runtime.permissions`: asking the policy before acting;
- :mod:`bus.runtime.execution`: permission checks, tool calls and their evidence;
- :mod:`bus.runtime.claims`: final claims and their verdicts;
- :mod:`bus.runtime.escalations`: failures, dead letters and humans' answers;
- :mod:`bus.runtime.confirmation`: asking the tools' own systems whether recorded side
  effects exist as recorded (``verify --external``);
- :mod:`bus.runtime.artifacts`: storing and reading artifacts for who may not touch the store;
- :mod:`bus.runtime.faults`: agents' reports of handlers that failed, and why;
- :mod:`bus.runtime.controls`: the operator's cancel, terminate, retry, reset and signal;
- :mod:`bus.runtime.sweeper`: workflows past their deadline or stalled, which send nothing.

Every request that changes a workflow carries a step key (:mod:`bus.runtime.steps`):
a key that already completed gets its recorded reply back, so a handler that runs
again after a crash neither repeats a side effect nor pays for a model twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from bus import telemetry
from bus.ledger import Ledger, LedgerError
from bus.ledger.errors import NotAParticipant
from bus.runtime.artifacts import ArtifactHandlers
from bus.runtime.claims import ClaimHandlers
from bus.runtime.confirmation import ConfirmationHandlers
from bus.runtime.controls import ControlHandlers
from bus.runtime.escalations import EscalationHandlers
from bus.runtime.execution import ToolExecution
from bus.runtime.faults import FaultHandlers
from bus.runtime.permissions import PermissionHandlers
from bus.runtime.pipeline import PipelineHandlers
from bus.runtime.policy import Policy
from bus.runtime.protocol import INCOMING_TRACE, Handler, as_reply, error_reply
from bus.runtime.registry import ToolRegistry
from bus.runtime.security import SecurityLog, reply_allowed
from bus.runtime.steps import Steps
from bus.runtime.sweeper import Sweeper
from bus.runtime.workflows import WorkflowHandlers
from bus.settings import Settings
from bus.transport.artifacts import ArtifactStore
from bus.transport.connection import flushed
from bus.transport.retry import TRANSIENT, UNAVAILABLE, WORKING_HEADER, WORKING_INTERVAL
from bus.transport.signing import runtime_signer
from bus.transport.subjects import Subjects
from handoff_schemas import OPERATIONS, FieldError, Reply, SchemaError, decode, encode
from handoff_schemas.limits import MAX_REQUEST_DEPTH, request_limit
from handoff_schemas.runtime import StepRequest

log = logging.getLogger(__name__)

ARTIFACT_CACHE_BYTES = 64 * 1024 * 1024
"""Artifacts a runtime keeps in memory (they never change): reads that hit it create no
JetStream consumer."""


class Runtime:
    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        policy: Policy,
        nc: Client,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.subjects = Subjects(settings.prefix)
        self.nc = nc
        self.authenticated = settings.credentials is not None
        self.security = SecurityLog(nc, self.subjects)
        self.steps = Steps(ledger, on_commit)
        artifacts = ArtifactStore(
            nc, self.subjects.artifact_bucket, cache_bytes=ARTIFACT_CACHE_BYTES
        )
        signer = runtime_signer(settings)  # tool calls and evidence carry its signature
        tools = ToolRegistry(nc.jetstream(), self.subjects)  # learned from the tool hosts
        execution = ToolExecution(self.steps, policy, tools, artifacts, nc, settings, signer)
        self.workflows = WorkflowHandlers(self.steps, policy, artifacts, self.security)
        pipeline = PipelineHandlers(self.steps, policy, artifacts)
        self._replaying = frozenset([*pipeline.operations(), *execution.operations()])
        """Operations that check the caller and replay a recorded reply in their own first
        command (a pipeline step is one :meth:`Steps.step`; ``execute`` authorizes), so they
        skip the look before dispatch: a read of the workflow, caught up, in the ledger thread."""
        self.escalations = EscalationHandlers(self.steps, policy, execution, settings)
        self._handlers: dict[str, Handler] = {
            **self.workflows.operations(),
            **pipeline.operations(),
            **PermissionHandlers(self.steps, policy, signer).operations(),
            **execution.operations(),
            **ClaimHandlers(self.steps, policy).operations(),
            **self.escalations.operations(),
            **ConfirmationHandlers(self.steps, nc, self.subjects).operations(),
            **ArtifactHandlers(self.steps, artifacts, self.security).operations(),
            **FaultHandlers(self.steps).operations(),
            **ControlHandlers(self.steps).operations(),
        }
        self._tasks: set[asyncio.Task[None]] = set()
        self.sweeper = Sweeper(self.steps, policy, settings.sweep_interval)
        self._sweeping: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        await self.nc.subscribe(self.subjects.runtime_all, queue="runtime", cb=self._on_message)
        await self.nc.subscribe(
            self.subjects.max_deliveries_advisory(),
            queue="runtime",
            cb=self._on_dead_letter,
        )
        await flushed(self.nc)  # subscribed before it says it serves
        self._sweeping = asyncio.create_task(self.sweeper.run())

    def close(self) -> None:
        if self._sweeping is not None:
            self._sweeping.cancel()
        self.steps.close()

    async def _on_dead_letter(self, msg: Msg) -> None:
        await self.escalations.on_dead_letter(self.nc, msg)

    async def _on_message(self, msg: Msg) -> None:
        # One task per request: a slow tool call must not hold up other agents.
        task = asyncio.create_task(self._respond(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _respond(self, msg: Msg) -> None:
        _, _, agent, op = msg.subject.rsplit(".", 3)
        log.debug("request %s from %s", op, agent)
        if msg.reply and not reply_allowed(agent, msg.reply, self.authenticated):
            # Not answered at all: the runtime's rights must not carry a caller's bytes
            # to a subject of the caller's choosing.
            await self.security.record(
                agent, op, "foreign_reply_subject", f"refused to reply on {msg.reply!r}"
            )
            return
        INCOMING_TRACE.set(telemetry.traceparent(msg.headers))
        beating = asyncio.create_task(self._working(msg)) if msg.reply else None
        try:
            with telemetry.attached(msg.headers):
                reply = await self.dispatch(agent, op, msg.data)
        except Exception:  # the last net: every request gets an answer
            log.exception("unanswerable %s from %s", op, agent)
            reply = error_reply("internal", f"the runtime failed to handle {op}; it was logged")
        finally:
            if beating is not None:
                beating.cancel()
        if msg.reply:
            await msg.respond(encode(reply))

    async def _working(self, msg: Msg) -> None:
        """Tell the caller, every second, that this replica is still on its request.

        A caller that hears nothing for a few seconds takes this replica for dead and
        asks again (another replica answers), instead of waiting out its whole timeout.
        """
        while True:
            await asyncio.sleep(WORKING_INTERVAL)
            with contextlib.suppress(NatsError):
                await self.nc.publish(msg.reply, b"", headers={WORKING_HEADER: "1"})

    async def dispatch(self, agent: str, op: str, data: bytes) -> Reply:
        """Decode, run and answer one request; every failure becomes an error reply."""
        request_type = OPERATIONS.get(op)
        if request_type is None:
            return error_reply(
                "unknown_operation", f"no operation {op!r}; known: {sorted(OPERATIONS)}"
            )
        if len(data) > (limit := request_limit(op)):
            return error_reply(
                "invalid_request",
                f"the request is {len(data)} bytes; the limit is {limit} "
                "(put large content in an artifact and pass its id)",
                [FieldError(field="$", message=f"longer than {limit} bytes")],
            )
        try:
            request = decode(data, request_type, max_depth=MAX_REQUEST_DEPTH)
        except SchemaError as error:
            if op == "handoff":
                await self.workflows.record_rejected_handoff(agent, data, str(error))
            return error_reply("invalid_request", str(error), error.fields)
        try:
            if isinstance(request, StepRequest) and op not in self._replaying:
                # A recorded reply is the caller's only if the workflow and the step are:
                # checked before replaying, or a recorded reply would answer anyone.
                recorded = await self.steps.recorded(agent, request.workflow_id, request.step_key)
                if recorded is not None:
                    return recorded
            result = await self._handlers[op](agent, request)
        except LedgerError as error:
            if isinstance(error, NotAParticipant):  # someone else's workflow, or step
                await self.security.record(agent, op, "not_a_participant", str(error))
            return as_reply(error)
        except TRANSIENT as error:
            # NATS or JetStream did not answer (a leader election): ask again, not a failure.
            log.warning("%s from %s met an unavailable NATS: %r", op, agent, error)
            return error_reply(UNAVAILABLE, f"NATS did not answer while handling {op}; ask again")
        except Exception:
            log.exception("internal error in %s from %s", op, agent)
            return error_reply("internal", f"the runtime failed to handle {op}; it was logged")
        return Reply(ok=True, result=msgspec.to_builtins(result))
