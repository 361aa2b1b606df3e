"""The runtime's hold on the ledger: reads, commands and recorded steps, all in one thread.

Every request that changes a workflow is a step with a key. :meth:`Steps.step` applies a
change and records its reply in the same commit, so a key asked again gets the recorded
reply back (a refusal included) instead of a second decision or a second side effect.

One thread owns the ledger in this process: commits never block the event loop, and this
replica's commits never race each other (other replicas' do, and the ledger retries).
Commands that arrive together share one commit (group commit), each answered after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar

import msgspec

from bus import telemetry
from bus.ledger import Ledger, Workflow
from bus.ledger.group_commit import Change, NewWorkflow, Outcome
from bus.runtime.protocol import INCOMING_TRACE, Refusal, as_reply, ok_reply, replayed
from handoff_schemas import Reply

T = TypeVar("T")

MAX_BATCH = 256
"""Commands committed in one transaction at most: a bound on a commit's size and latency."""


class Steps:
    def __init__(self, ledger: Ledger, on_commit: Callable[[], None]) -> None:
        self.ledger = ledger
        self.on_commit = on_commit
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._waiting: list[tuple[str, Change, asyncio.Future[Outcome]]] = []
        self._committing: asyncio.Task[None] | None = None

    def close(self) -> None:
        self._thread.shutdown(wait=True)

    async def in_ledger_thread(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call, *args)

    async def read(self, workflow_id: str, view: Callable[[Workflow], T]) -> T:
        """``view`` of a workflow, taken in the ledger thread (no other thread touches it)."""
        return await self.in_ledger_thread(self.ledger.read, workflow_id, view)

    async def command(self, workflow_id: str, change: Callable[[Workflow], T]) -> T:
        """Apply ``change`` and commit it together with the other commands waiting now.

        Commands that arrive while a commit is under way share the next one (group commit):
        one transaction, and one fsync, for many. Each is answered after its shared commit.
        """
        return await self._committed(workflow_id, change)  # type: ignore[no-any-return]

    async def start(self, new: NewWorkflow) -> Workflow:
        """Start a workflow in the next shared commit, as :meth:`command` changes one."""
        return await self._committed(new.workflow_id, new)  # type: ignore[no-any-return]

    async def _committed(self, workflow_id: str, change: Change) -> Any:
        done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((workflow_id, change, done))
        if self._committing is None or self._committing.done():
            self._committing = asyncio.create_task(self._commit_waiting())
        try:
            return (await asyncio.shield(done)).unwrap()
        finally:
            self.on_commit()

    async def _commit_waiting(self) -> None:
        """Commit the waiting commands in batches until none waits."""
        while self._waiting:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            commands = [(workflow_id, change) for workflow_id, change, _ in batch]
            try:
                outcomes = await self.in_ledger_thread(self.ledger.command_batch, commands)
            except Exception as error:  # the thread is gone (closing): no command is lost silently
                outcomes = [Outcome(error=error)] * len(batch)
            for (_, _, done), outcome in zip(batch, outcomes, strict=True):
                if not done.done():
                    done.set_result(outcome)

    async def recorded(self, agent: str, workflow_id: str, step_key: str) -> Reply | None:
        """The reply a step of ``agent``'s already got, if it completed.

        Refused (:class:`~bus.ledger.errors.NotAParticipant`) when ``agent`` takes no
        part in the workflow or the step key is another agent's.
        """

        def view(workflow: Workflow) -> Any:
            workflow.require_participant(agent)
            workflow.require_step_owner(agent, step_key)
            return self.ledger.recorded_reply(workflow, step_key)

        recorded = await self.read(workflow_id, view)
        return None if recorded is None else msgspec.convert(recorded, Reply)

    async def step(
        self,
        agent: str,
        op: str,
        workflow_id: str,
        step_key: str,
        change: Callable[[Workflow], Any],
        **options: bool,
    ) -> Any:
        """Apply ``change`` as one step of the workflow, and record its reply; ``options`` are
        :meth:`applying`'s ``require_open`` and ``redo``."""
        return await self.command(
            workflow_id, self.applying(agent, op, step_key, change, **options)
        )

    def applying(
        self,
        agent: str,
        op: str,
        step_key: str,
        change: Callable[[Workflow], Any],
        require_open: bool = True,
        redo: bool = False,
    ) -> Callable[[Workflow], Any]:
        """``change`` as a step: a command that applies it and records its reply, for
        :meth:`step`, or for several steps committed as one command.

        A refusal raised by ``change`` is recorded as the step's reply too: asked
        again, the runtime refuses again without re-deciding. Only ``redo`` (a
        human approved what was refused) replaces a step's recorded reply.
        """
        trace_id = telemetry.trace_id(INCOMING_TRACE.get())

        def apply(workflow: Workflow) -> Any:
            workflow.require_participant(agent)
            workflow.require_step_owner(agent, step_key)
            if step_key in workflow.steps and not redo:  # asked again, or another replica was first
                return self.replay(workflow, step_key)
            if require_open:  # a recorded reply stands even once the workflow has ended
                workflow.require_open()
            try:
                result = change(workflow)
            except Refusal as refusal:
                refused = msgspec.to_builtins(as_reply(refusal))
                workflow.complete_step(step_key, op, refused, trace_id, agent)
                raise
            workflow.complete_step(step_key, op, ok_reply(result), trace_id, agent)
            return result

        return apply

    def replay(self, workflow: Workflow, step_key: str) -> Any:
        """A completed step's recorded reply again: its result, or its refusal raised again."""
        return replayed(msgspec.convert(self.ledger.recorded_reply(workflow, step_key), Reply))

    async def refuse(
        self,
        agent: str,
        op: str,
        workflow_id: str,
        step_key: str,
        refusal: Refusal,
        **options: bool,
    ) -> NoReturn:
        """Record ``refusal`` as the step's reply, then raise it (``options``: :meth:`step`'s)."""

        def refuse(workflow: Workflow) -> None:
            raise refusal

        await self.step(agent, op, workflow_id, step_key, refuse, **options)
        raise AssertionError("unreachable: step() re-raises the refusal")
