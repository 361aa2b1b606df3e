"""Operator controls: cancel, terminate, retry, reset and signal a workflow from outside it.

Only the operator identity may use them (the ``<agent>`` token of the subject, which NATS
pins to the connection's credentials, never a field of the request); each is recorded in
the workflow's ledger with who (``by``), the role that asked, and why. What an agent sees:

- cancelled or terminated: its next request is refused with the code ``cancelled`` or
  ``terminated`` and it stops handling (a step already in the runtime finishes);
- retried: the failed handling's handoff arrives again; its failed steps run again,
  the ones that succeeded replay (no side effect twice);
- reset: a new workflow (a branch, linked both ways) continues from the chosen point
  with the steps recorded up to it; the old workflow is closed as ``reset``;
- signalled: a handling waiting for the signal (``ctx.wait_for_signal``) is delivered
  again and gets the signal's data.

A control that does not apply (an unknown workflow, cancelling a completed one, retrying
one that did not fail) is refused with the reason, and nothing is recorded.
"""

from __future__ import annotations

from uuid import uuid4

from bus.ledger import Workflow
from bus.ledger.errors import WorkflowClosed
from bus.runtime.protocol import Handler, Refusal, ok_reply
from bus.runtime.steps import Steps
from bus.transport.subjects import OPERATOR
from handoff_schemas import (
    AwaitSignalRequest,
    ControlReply,
    ResetRequest,
    RetryRequest,
    SignalReply,
    SignalRequest,
    StopRequest,
)


def require_operator(agent: str, op: str) -> None:
    if agent != OPERATOR:
        raise Refusal("permission_denied", f"only the operator may {op} workflows, not {agent!r}")


class ControlHandlers:
    def __init__(self, steps: Steps) -> None:
        self.steps = steps

    def operations(self) -> dict[str, Handler]:
        return {
            "cancel": self.cancel,
            "terminate": self.terminate,
            "retry": self.retry,
            "reset": self.reset,
            "signal": self.signal,
            "wait": self.wait,
        }

    async def cancel(self, agent: str, request: StopRequest) -> ControlReply:
        return await self._stop(agent, request, "cancel")

    async def terminate(self, agent: str, request: StopRequest) -> ControlReply:
        return await self._stop(agent, request, "terminate")

    async def _stop(self, agent: str, request: StopRequest, how: str) -> ControlReply:
        require_operator(agent, how)

        def stop(workflow: Workflow) -> ControlReply:
            if workflow.closed:
                raise WorkflowClosed(
                    f"workflow {workflow.id} is already {workflow.status}: nothing to {how}"
                )
            workflow.stop_by_operator(how, request.by, agent, request.reason)
            return ControlReply(workflow_id=request.workflow_id, status=workflow.status)

        return await self.steps.command(request.workflow_id, stop)

    async def retry(self, agent: str, request: RetryRequest) -> ControlReply:
        require_operator(agent, "retry")

        def retry(workflow: Workflow) -> ControlReply:
            if workflow.status != "failed":
                raise Refusal(
                    "invalid_request",
                    f"workflow {workflow.id} is {workflow.status}: only a failed workflow "
                    "is retried (a running one retries by itself)",
                )
            handoff_id = request.handoff_id or workflow.failed_handling()
            if handoff_id not in workflow.handoffs:
                raise Refusal(
                    "invalid_request", f"workflow {workflow.id} has no handoff {handoff_id!r}"
                )
            cleared = workflow.retry_handling(handoff_id, request.by, agent, request.reason)
            return ControlReply(
                workflow_id=request.workflow_id,
                status=workflow.status,
                detail=f"handoff {handoff_id} delivered again; {len(cleared)} failed step(s) "
                "will run again",
            )

        return await self.steps.command(request.workflow_id, retry)

    async def signal(self, agent: str, request: SignalRequest) -> ControlReply:
        require_operator(agent, "signal")

        def signal(workflow: Workflow) -> ControlReply:
            if workflow.closed:
                raise WorkflowClosed(
                    f"workflow {workflow.id} is {workflow.status}: it takes no more signals"
                )
            woken = workflow.receive_signal(
                request.name, request.data, request.by, agent, request.reason, f"sig-{uuid4().hex}"
            )
            detail = (
                f"delivered to the waiting handoff {woken}"
                if woken
                else "recorded; no handling waits for it yet"
            )
            return ControlReply(
                workflow_id=request.workflow_id, status=workflow.status, detail=detail
            )

        return await self.steps.command(request.workflow_id, signal)

    async def reset(self, agent: str, request: ResetRequest) -> ControlReply:
        require_operator(agent, "reset")
        if (request.to_event is None) == (request.to_checkpoint is None):
            raise Refusal("invalid_request", "name one point to reset to: an event or a checkpoint")
        try:
            branch = await self.steps.in_ledger_thread(
                self.steps.ledger.branch,
                request.workflow_id,
                request.to_event,
                request.to_checkpoint,
                request.by,
                agent,
                request.reason,
            )
        finally:
            self.steps.on_commit()
        return ControlReply(
            workflow_id=request.workflow_id,
            status="reset",
            new_workflow_id=str(branch.id),
            detail=f"continues as workflow {branch.id} from event {branch.reset_from['version']}",
        )

    async def wait(self, agent: str, request: AwaitSignalRequest) -> SignalReply:
        """An agent's ``ctx.wait_for_signal``: the next unread signal of that name, recorded as
        the step's reply; without one, the handling waits (refused ``waiting``, not recorded
        as the step's reply) until a signal delivers its handoff again."""

        def wait(workflow: Workflow) -> SignalReply:
            workflow.require_open()
            workflow.require_participant(agent)
            workflow.require_step_owner(agent, request.step_key)
            signal = workflow.unread_signal(request.name)
            if signal is None:
                workflow.await_signal(agent, request.name, request.step_key)
                raise Refusal(
                    "waiting",
                    f"no signal {request.name!r} yet: the handling waits for an operator's "
                    f"`claimcheck workflows signal {workflow.id} {request.name}`",
                )
            reply = SignalReply(
                name=request.name, data=signal["data"], signal_id=signal["signalId"]
            )
            workflow.complete_step(request.step_key, "wait", ok_reply(reply), agent=agent)
            return reply

        return await self.steps.command(request.workflow_id, wait)
