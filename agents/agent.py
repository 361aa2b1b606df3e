"""``Agent``: an untrusted process that consumes its inbox and asks the runtime for everything.

An agent is a name, a model and handlers for the tasks it knows::

    triage = Agent("triage", model=ScriptedModel(...))

    @triage.task("triage_complaint")
    async def handle(ctx: Context) -> None: ...

``claimcheck agent run agents.complaints:triage`` runs it as its own OS process.
Its inbox is a durable JetStream consumer shared by every replica of the agent
(a work queue), made by the runtime (an agent may only fetch from it and acknowledge),
fetched in batches and worked on several handoffs at once (``concurrency``, by default
``CLAIMCHECK_AGENT_CONCURRENCY``); a handoff is acknowledged only after its handler
returned, so a crash mid-handler means redelivery, and step keys make the rerun safe.
The ack wait is short (10 s, ``inbox_ack_wait``) and a working agent beats
``in_progress`` three times per ack wait, so the handoff of an agent that died is taken
up again within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from agents.client import RuntimeClient, RuntimeRefused
from agents.context import Context, WorkflowHalted
from agents.faults import report_fault
from agents.model import Model
from bus import telemetry
from bus.settings import Settings
from bus.transport.connection import INBOX_MISSING, agent_durable, connect
from bus.transport.subjects import Subjects
from handoff_schemas import Handoff, SchemaError, decode

log = logging.getLogger(__name__)

Handler = Callable[[Context], Awaitable[None]]

INBOX_LOOK_INTERVAL = 0.2
"""Seconds between looks for an inbox consumer the runtime has not made yet: a fraction of
the time a first handoff waits for it."""

BATCH_WAIT = 0.005
"""Seconds a batch fetch waits for more: the backlog comes at once, a quiet inbox costs this."""

RETRYABLE_REFUSALS = frozenset({"internal"})
"""Refusals a redelivery may change. Any other refusal is recorded as its step's
reply, so a re-run would meet it again: the handoff is acknowledged instead."""


class Agent:
    def __init__(
        self,
        name: str,
        model: Model | Callable[[], Model],
        system_prompt: str = "",
        concurrency: int | None = None,
    ) -> None:
        self.name = name
        self.concurrency = concurrency
        """Handoffs worked on at once; None: the setting ``CLAIMCHECK_AGENT_CONCURRENCY``."""
        self._model = model
        self.system_prompt = system_prompt or f"You are the {name} agent."
        self.ack_wait = Settings.model_fields["inbox_ack_wait"].default
        self.handlers: dict[str, Handler] = {}

    def task(self, name: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.handlers[name] = handler
            return handler

        return register

    @property
    def model(self) -> Model:
        """The model, built on first use when given as a factory."""
        if callable(self._model) and not hasattr(self._model, "complete"):
            self._model = self._model()
        return self._model  # type: ignore[return-value]

    async def run(self, settings: Settings, stop: asyncio.Event | None = None) -> None:
        """Consume the inbox until ``stop`` is set."""
        stop = stop or asyncio.Event()
        nc = await connect(settings, f"claimcheck-agent-{self.name}")
        subjects = Subjects(settings.prefix)
        js = nc.jetstream()
        # Fetch and acknowledge are all an agent may do with its inbox consumer.
        inbox = await js.pull_subscribe_bind(agent_durable(self.name), subjects.stream("handoff"))
        self.ack_wait = settings.inbox_ack_wait  # its consumer's, which the runtime set
        client = RuntimeClient(nc, subjects, self.name, settings.request_timeout)
        concurrency = self.concurrency or settings.agent_concurrency
        log.info(
            "agent %s consuming %s, %d at a time", self.name, subjects.inbox(self.name), concurrency
        )
        working: set[asyncio.Task[None]] = set()

        def begin(msg: Msg) -> None:
            task = asyncio.create_task(self._handle_logged(msg, client))
            working.add(task)
            task.add_done_callback(working.discard)

        try:
            while not stop.is_set():
                if len(working) >= concurrency:
                    await asyncio.wait(working, return_when=asyncio.FIRST_COMPLETED)
                    continue
                await self._fetch(inbox, concurrency - len(working), begin)
        finally:
            # Handoffs under way finish (and are acknowledged) before the agent leaves; a
            # drain would wait on the idle pull request instead.
            if working:
                await asyncio.wait(working)
            await inbox.unsubscribe()
            await nc.close()

    @staticmethod
    async def _fetch(
        inbox: JetStreamContext.PullSubscription, room: int, begin: Callable[[Msg], None]
    ) -> None:
        """Begin the next handoff as soon as there is one, then whatever else waits (up to
        ``room`` in all).

        One message is waited for: a pull for a batch would wait for the whole batch, or
        its timeout, before returning. What else is waiting comes in one more request,
        made while the first handoff is already being worked on. An inbox consumer the
        runtime has not made yet (it makes it just before this agent's first handoff) is
        looked for again soon.
        """
        try:
            first = await inbox.fetch(1, timeout=1.0)
        except TimeoutError:  # nats-py raises its own, or asyncio's, depending on the path
            return
        except INBOX_MISSING:
            await asyncio.sleep(INBOX_LOOK_INTERVAL)
            return
        except NatsError as error:  # disconnected: the client reconnects by itself
            log.warning("inbox fetch failed (%s); retrying", error)
            await asyncio.sleep(0.5)
            return
        for msg in first:
            begin(msg)
        if room > 1:
            with contextlib.suppress(TimeoutError, NatsError):
                for msg in await inbox.fetch(room - 1, timeout=BATCH_WAIT):
                    begin(msg)

    async def _handle_logged(self, msg: Msg, client: RuntimeClient) -> None:
        """:meth:`handle`, with what escapes it logged: unacknowledged, it is redelivered."""
        try:
            await self.handle(msg, client)
        except Exception:
            log.exception("handling a handoff failed; it will be redelivered")

    async def handle(self, msg: Msg, client: RuntimeClient) -> None:
        try:
            handoff = decode(msg.data, Handoff)
        except SchemaError as error:
            log.error("dropping a malformed inbox message: %s", error)
            await msg.term()
            return
        heartbeat = asyncio.create_task(self._keep_alive(msg))
        attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": self.name,
            "claimcheck.workflow_id": handoff.workflow_id,
            "claimcheck.task": handoff.task,
        }
        try:
            with telemetry.span(f"invoke_agent {self.name}", msg.headers, **attributes):
                await self._run_handler(msg, handoff, client)
        finally:
            heartbeat.cancel()

    async def _keep_alive(self, msg: Msg) -> None:
        """Tell JetStream the handoff is still being worked on (long reasoning), so it is not
        redelivered to another replica while this one is alive."""
        while True:
            await asyncio.sleep(self.ack_wait / 3)
            try:
                await msg.in_progress()
            except NatsError:
                pass  # reconnecting; the next beat may get through

    async def _run_handler(self, msg: Msg, handoff: Handoff, client: RuntimeClient) -> None:
        handler = self.handlers.get(handoff.task)
        ctx = Context(
            self.name,
            handoff,
            client,
            self.model,
            sorted(self.handlers),
            self.system_prompt,
        )
        try:
            await ctx.begin()  # refuses a task this agent does not know, and records why
            assert handler is not None
            await handler(ctx)
        except RuntimeRefused as refusal:
            if refusal.code in RETRYABLE_REFUSALS:
                await self._retry_later(msg, handoff, refusal)
                return
            if refusal.code == "waiting":
                log.info("workflow %s waits for a signal: %s", handoff.workflow_id, refusal)
            else:  # closed, cancelled or terminated by an operator, refused: stop handling it
                log.warning("workflow %s ends for %s: %s", handoff.workflow_id, self.name, refusal)
        except WorkflowHalted as halted:
            log.warning("workflow %s halted for %s: %s", handoff.workflow_id, self.name, halted)
        except Exception as error:  # a handler bug must not kill the agent process
            log.exception("handler %s failed", handoff.task)
            if await report_fault(client, ctx, msg, error) == "fail":
                await msg.ack_sync()  # the runtime ended the workflow: nothing to redeliver
                return
            await self._retry_later(msg, handoff, error)
            return
        await msg.ack_sync()
        log.info("handled %s for workflow %s", handoff.task, handoff.workflow_id)

    async def _retry_later(self, msg: Msg, handoff: Handoff, error: Exception) -> None:
        """Redeliver after a pause; completed steps will replay from the ledger."""
        log.warning("workflow %s: %s; redelivering", handoff.workflow_id, error)
        await msg.nak(delay=1.0)
