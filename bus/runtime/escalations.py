"""Failures and escalations: what the runtime decides when something went wrong, and what
follows when a human answers.

A model failure reported by an agent goes through the failure table
(:mod:`bus.runtime.governance`); a handoff that exhausted its deliveries fails its
workflow; an approval resumes the workflow (running the held action, with the human's
grant as its permission) and a denial ends it. An approved claim is vouched for by the
human: a handoff refused for it goes on, and the workflow completes only if nothing else
is open.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from bus.ledger import LedgerError, Workflow
from bus.runtime.catalogue import fill_resource
from bus.runtime.execution import ToolExecution
from bus.runtime.governance import after_failure, granted, handoff_of, rule_uses
from bus.runtime.policy import Policy
from bus.runtime.protocol import Handler, Refusal
from bus.runtime.registry import payload_problems
from bus.runtime.steps import Steps
from bus.settings import Settings
from bus.transport.subjects import OPERATOR
from handoff_schemas import (
    FailureRequest,
    Handoff,
    ResolveReply,
    ResolveRequest,
    RetryAdvice,
    SchemaError,
    decode,
)

log = logging.getLogger(__name__)


class EscalationHandlers:
    def __init__(
        self,
        steps: Steps,
        policy: Policy,
        execution: ToolExecution,
        settings: Settings,
    ) -> None:
        self.steps = steps
        self.settings = settings  # read per failure: the window may be tuned while serving
        self.policy = policy
        self.execution = execution

    def operations(self) -> dict[str, Handler]:
        return {"failure": self.failure, "resolve": self.resolve}

    async def failure(self, agent: str, request: FailureRequest) -> RetryAdvice:
        """An agent's model failed to answer, or its output failed validation or a verifier."""

        def change(workflow: Workflow) -> RetryAdvice:
            return after_failure(
                workflow,
                self.policy,
                agent,
                request.kind,
                request.detail,
                request.step_key,
                retry_after=request.retry_after_seconds,
                model_window_seconds=self.settings.model_availability_window,
            )

        return await self.steps.step(
            agent, "failure", request.workflow_id, request.step_key, change
        )

    async def resolve(self, agent: str, request: ResolveRequest) -> ResolveReply:
        """A human approves or denies an escalation; approval resumes the workflow."""
        if agent != OPERATOR:
            raise Refusal(
                "permission_denied", f"only the operator may resolve escalations, not {agent!r}"
            )
        corrected = None
        if request.corrections:
            corrected = await self._corrected(request)
        escalation = await self.steps.command(
            request.workflow_id,
            lambda wf: wf.resolve_escalation(
                request.escalation_id,
                request.decision,
                request.approver,
                request.reason,
                corrected,
            ),
        )
        if request.decision == "deny":
            why = request.reason or "no reason given"
            reason = f"{request.approver} denied {escalation['kind']}: {why}"
            await self.steps.command(request.workflow_id, lambda wf: wf.fail(reason))
        elif escalation["claimId"]:
            done = self.policy.done()
            outcome = await self.steps.command(
                request.workflow_id,
                lambda wf: wf.approve_claim(
                    escalation["claimId"], request.approver, escalation["stepKey"], done
                ),
            )
            log.info("approved claim %s: %s", escalation["claimId"], outcome)
        else:
            await self._carry_out_approval(request, escalation)
        status = await self.steps.read(request.workflow_id, lambda wf: wf.status)
        return ResolveReply(workflow_status=status)

    async def _corrected(self, request: ResolveRequest) -> dict[str, Any]:
        """The held action with the human's corrections, if the policy allows it as corrected.

        A plain approval is the human's grant over the policy's denial; a correction makes a
        new action nobody has checked, so it must fit the tool's registered schema and pass
        the policy on its own.
        """
        if request.decision != "approve":
            raise Refusal("invalid_request", "only an approval carries corrections")
        held, agent, uses = await self.steps.read(
            request.workflow_id, lambda wf: self._held(wf, request)
        )
        tool = await self.execution.tools.get(held["tool"])
        if tool is None:
            raise Refusal("invalid_request", f"no tool host serves {held['tool']!r} to correct")
        payload = {**held["payload"], **request.corrections}
        problems = payload_problems(tool.input_schema, payload)
        if problems:
            raise Refusal(
                "invalid_tool_payload", f"the corrected {held['tool']} payload is invalid", problems
            )
        resource = fill_resource(tool.resource, payload)
        decision = self.policy.decide(agent, held["tool"], resource, uses)
        if not decision.allowed:
            raise Refusal(
                "permission_denied",
                f"the corrected action ({held['tool']} on {resource}) is {decision.outcome} "
                f"by rule {decision.rule}: {decision.reason}; the escalation stays open",
            )
        return {"tool": held["tool"], "resource": resource, "payload": payload}

    @staticmethod
    def _held(workflow: Workflow, request: ResolveRequest) -> tuple[dict[str, Any], str, Any]:
        """The action an escalation holds, the agent it was for, and the rule uses so far."""
        escalation = workflow.escalations.get(request.escalation_id)
        held = None if escalation is None else escalation["action"]
        if held is None:
            raise Refusal(
                "invalid_request",
                f"escalation {request.escalation_id} holds no action to correct",
            )
        return held, escalation["agent"], rule_uses(workflow)

    async def _carry_out_approval(self, request: ResolveRequest, escalation: dict) -> None:
        """Run the held action (as corrected, if it was), or grant one more attempt, then
        hand the work back."""
        step_key = escalation["stepKey"]
        action = escalation.get("corrected") or escalation["action"]
        if action is not None:
            try:
                await self.execution.run_tool(
                    escalation["agent"],
                    request.workflow_id,
                    step_key,
                    action,
                    permission="approved",
                    rule=f"human:{request.approver}",
                )
            except Refusal as refusal:  # recorded as the step's reply; the agent sees it on resume
                log.warning("approved action failed: %s", refusal)
        else:  # a refused step gets one more attempt; a stalled one is just delivered again
            await self.steps.command(
                request.workflow_id,
                lambda wf: (
                    wf.complete_step(
                        step_key,
                        "resolve",
                        granted(
                            self.steps.ledger.recorded_reply(wf, step_key),
                            self.policy,
                            escalation["kind"],
                        ),
                        agent=escalation["agent"],
                    )
                    if step_key in wf.steps
                    else None
                ),
            )
        await self.steps.command(
            request.workflow_id,
            lambda wf: wf.resume(
                wf.handoffs[handoff_of(step_key)],
                request.escalation_id,
                wf.traceparents.get(handoff_of(step_key), ""),
            ),
        )

    async def on_dead_letter(self, nc: Client, msg: Msg) -> None:
        """An inbox message ran out of deliveries: record it where people will look."""
        advisory = msgspec.json.decode(msg.data)
        stored = await nc.jetstream().get_msg(advisory["stream"], advisory["stream_seq"])
        try:
            handoff = msgspec.to_builtins(decode(stored.data or b"", Handoff))
            await self.steps.command(
                handoff["workflowId"], lambda wf: wf.dead_letter(handoff, advisory["deliveries"])
            )
        except (SchemaError, LedgerError) as error:
            log.error("dead letter %s could not be recorded: %s", advisory, error)
            return
        log.warning(
            "handoff %s dead-lettered after %s deliveries",
            handoff["handoffId"],
            advisory["deliveries"],
        )
