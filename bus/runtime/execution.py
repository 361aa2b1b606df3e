"""Tool execution: the permission check, the call to a tool host, and the evidence.

Read top to bottom, this is the path of one ``execute`` request: the call is admitted
(:mod:`bus.runtime.admission`: the tool as its host registered it, a payload that fits
its schema); the runtime reads the resource from the payload
and decides with its own policy (recorded with the rule and the reason); a denied
action becomes evidence and an escalation; an allowed one goes to a tool host with the
step's idempotency key, is retried as the failure table says, and ends in a recorded
execution and an evidence record, committed together with the step's reply. The evidence
holds the facts the tool declares, and the content addresses of the call's full input and
output (stored as artifacts), so an auditor can check every fact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NoReturn

import msgspec
from nats.aio.client import Client

from bus.ledger import Workflow
from bus.ledger.errors import NotAParticipant
from bus.runtime.admission import Admission
from bus.runtime.availability import InFlight, ToolCaller, ToolUnavailable
from bus.runtime.catalogue import declared_facts, fill_resource
from bus.runtime.governance import after_failure, rule_uses
from bus.runtime.policy import Decision, Policy
from bus.runtime.protocol import Handler, Refusal, replayed
from bus.runtime.registry import ToolRegistry
from bus.runtime.steps import Steps
from bus.settings import Settings
from bus.transport.artifacts import ArtifactStore
from bus.transport.signing import Signer
from bus.transport.subjects import Subjects
from handoff_schemas import (
    ExecuteReply,
    ExecuteRequest,
    FieldError,
    RetryAdvice,
)


def give_up(
    workflow: Workflow,
    agent: str,
    step_key: str,
    action: dict[str, Any],
    permission: str,
    rule: str,
    refusal: Refusal,
    kind: str,
    facts: dict[str, Any],
    artifacts: dict[str, str],
    sign: Callable[[bytes], str],
) -> NoReturn:
    """The attempts ran out: a tool that timed out or kept failing is failed evidence too.

    So an agent can honestly claim the failure, and nobody can claim the success. A
    timeout's outcome is unknown (the tool may have acted); the record says so.
    """
    if kind in ("tool_timeout", "tool_error"):
        refs = {"error": str(refusal)[:500]}
        if kind == "tool_timeout":
            refs["outcome"] = "unknown"
        evidence = workflow.add_evidence(
            sign=sign,
            actor=agent,
            action=action["tool"],
            resource=action["resource"],
            permission=permission,
            rule=rule,
            tool=action["tool"],
            status="failed",
            refs=refs,
            facts=facts,
            step_key=step_key,
            artifacts=artifacts,
        )
        refusal.fields.append(FieldError(field="evidenceId", message=evidence.audit_id))
    raise refusal


class ToolExecution:
    def __init__(
        self,
        steps: Steps,
        policy: Policy,
        tools: ToolRegistry,
        artifacts: ArtifactStore,
        nc: Client,
        settings: Settings,
        signer: Signer,
    ) -> None:
        self.signer = signer  # signs every tool call and every evidence record
        self.steps = steps
        self.policy = policy
        self.tools = tools
        self.nc = nc
        self.settings = settings  # read per call: the tool timeout may be tuned while serving
        self.subjects = Subjects(settings.prefix)
        self._running: InFlight[ExecuteReply] = InFlight()
        self.admission = Admission(steps, policy, tools, nc, settings, signer)
        self.artifacts = artifacts

    def operations(self) -> dict[str, Handler]:
        return {"execute": self.execute}

    async def execute(self, agent: str, request: ExecuteRequest) -> ExecuteReply:
        """The tool step: authorized, run once, recorded with its evidence. A step asked
        again gets its recorded reply from the authorizing command (no read before it)."""
        if await self.tools.get(request.tool) is None:  # answered already: no wait for a host
            recorded = await self.steps.recorded(agent, request.workflow_id, request.step_key)
            if recorded is not None:
                return msgspec.convert(replayed(recorded), ExecuteReply)
        tool = await self.admission.admit(agent, request)
        resource = fill_resource(tool.resource, request.payload)
        action = {"tool": request.tool, "resource": resource, "payload": request.payload}
        decision = await self.steps.command(
            request.workflow_id, lambda wf: self._authorize(wf, agent, request, resource)
        )
        if isinstance(decision, ExecuteReply):  # the step's recorded reply
            return decision
        if not decision.allowed:
            artifacts = {"input": await self.store(request.payload)}
            facts = declared_facts(tool, request.payload, {})
            return await self.steps.step(
                agent,
                "execute",
                request.workflow_id,
                request.step_key,
                lambda wf: self._refuse_action(
                    wf, agent, request.step_key, action, decision, artifacts, facts
                ),
            )
        return await self.run_tool(
            agent,
            request.workflow_id,
            request.step_key,
            action,
            permission="allowed",
            rule=decision.rule,
        )

    def _authorize(
        self, workflow: Workflow, agent: str, request: ExecuteRequest, resource: str
    ) -> Decision | ExecuteReply:
        """The runtime's own decision on the resource read from the payload, recorded once;
        for a step already completed, its recorded reply (the caller checked first)."""
        workflow.require_participant(agent)
        workflow.require_step_owner(agent, request.step_key)
        if request.step_key in workflow.steps:
            return msgspec.convert(self.steps.replay(workflow, request.step_key), ExecuteReply)
        workflow.require_open()
        earlier = workflow.permissions.get(request.step_key)
        if earlier is not None and earlier.get("agent", agent) != agent:
            raise NotAParticipant(f"step {request.step_key!r} was decided for another agent")
        if earlier is not None:  # decided on an interrupted attempt of this step
            return Decision(
                outcome=earlier["permission"], rule=earlier["rule"], reason="decided earlier"
            )
        decision = self.policy.decide(agent, request.tool, resource, rule_uses(workflow))
        workflow.request_action(agent, request.tool, resource, request.payload, request.step_key)
        workflow.decide_permission(
            agent,
            request.tool,
            resource,
            decision.outcome,
            decision.rule,
            decision.reason,
            request.step_key,
        )
        return decision

    def _refuse_action(
        self,
        workflow: Workflow,
        agent: str,
        step_key: str,
        action: dict[str, Any],
        decision: Decision,
        artifacts: dict[str, str],
        facts: dict[str, Any],
    ) -> None:
        """A denied action is evidence and an escalation; one needing approval, an escalation."""
        if decision.outcome == "approval_required":
            workflow.raise_escalation(
                "approval_required", decision.reason, agent, step_key, action=action
            )
            raise Refusal(
                "approval_required",
                decision.reason,
                retry=RetryAdvice(strategy="escalate", attempt=1, max_attempts=1),
            )
        evidence = workflow.add_evidence(
            sign=self.signer.sign,
            actor=agent,
            action=action["tool"],
            resource=action["resource"],
            permission="denied",
            rule=decision.rule,
            tool=action["tool"],
            status="denied",
            facts=facts,
            step_key=step_key,
            artifacts=artifacts,
        )
        advice = after_failure(
            workflow,
            self.policy,
            agent,
            "permission_denied",
            decision.reason,
            step_key,
            action=action,
        )
        raise Refusal(
            "permission_denied",
            f"{decision.reason} (rule {decision.rule}); evidence {evidence.audit_id}",
            [FieldError(field="evidenceId", message=evidence.audit_id)],
            retry=advice,
        )

    async def run_tool(
        self,
        agent: str,
        workflow_id: str,
        step_key: str,
        action: dict[str, Any],
        permission: str,
        rule: str,
    ) -> ExecuteReply:
        """Run the step's tool call, or join the run of it already under way in this replica
        (an agent asks again while the runtime waits out an unavailable tool host)."""
        return await self._running.join(
            f"{workflow_id}/{step_key}/{permission}",
            lambda: self._run_tool(agent, workflow_id, step_key, action, permission, rule),
        )

    async def _run_tool(
        self,
        agent: str,
        workflow_id: str,
        step_key: str,
        action: dict[str, Any],
        permission: str,
        rule: str,
    ) -> ExecuteReply:
        """Call the tool host, retrying timeouts and transient errors as the failure table says.

        Also the path of an action a human approved (``permission="approved"``): its
        reply replaces the step's recorded refusal, whatever the workflow's status.
        """
        approved = permission == "approved"
        described = await self.tools.get(action["tool"])

        def facts(output: dict[str, Any]) -> dict[str, Any]:
            return declared_facts(described, action["payload"], output)

        caller = ToolCaller(
            self.nc, self.steps, self.settings, agent, workflow_id, step_key, action, self.signer
        )
        while True:
            try:
                result = await caller.call(permission)
            except ToolUnavailable as unavailable:  # the availability window is over
                kind, detail, fields = unavailable.kind, str(unavailable), []
            else:
                if result.status == "succeeded" or (
                    result.status == "failed" and not result.transient
                ):
                    break
                kind = (
                    "invalid_tool_payload" if result.status == "invalid_payload" else "tool_error"
                )
                detail, fields = result.error or kind, result.fields
            advice = await self.steps.command(
                workflow_id,
                lambda wf, k=kind, d=detail: after_failure(
                    wf, self.policy, agent, k, d, step_key, per_step=k != "invalid_tool_payload"
                ),
            )
            if advice.strategy == "retry":
                await asyncio.sleep(advice.delay_seconds)
                continue
            refusal = Refusal(
                kind,
                f"{action['tool']}: {detail}",
                fields or [FieldError(field="$", message=detail)],
                retry=advice,
            )
            stored_input = {"input": await self.store(action["payload"])}
            await self.steps.step(
                agent,
                "execute",
                workflow_id,
                step_key,
                lambda wf, r=refusal, k=kind, a=stored_input: give_up(
                    wf,
                    agent,
                    step_key,
                    action,
                    permission,
                    rule,
                    r,
                    k,
                    facts({}),
                    a,
                    self.signer.sign,
                ),
                require_open=False,
                redo=approved,
            )
            raise AssertionError("unreachable: give_up raises the refusal")
        duration_ms = caller.last_duration_ms

        stored = await asyncio.gather(
            self.store(action["payload"]), self.store(msgspec.to_builtins(result))
        )  # side by side: a tool step waits for one store, not two
        artifacts = dict(zip(("input", "output"), stored, strict=True))

        def record(workflow: Workflow) -> ExecuteReply:
            if result.reconciled:
                workflow.note_unknown_outcome(agent, action["tool"], result.reconciled, step_key)
            workflow.execute_tool(
                agent,
                action["tool"],
                result.status,
                duration_ms,
                caller.attempts,
                self.policy.tool_cost(action["tool"]),
                step_key,
            )
            evidence = workflow.add_evidence(
                sign=self.signer.sign,
                actor=agent,
                action=action["tool"],
                resource=action["resource"],
                permission=permission,
                rule=rule,
                tool=action["tool"],
                status=result.status,
                refs=result.refs,
                facts=facts(result.output),
                step_key=step_key,
                artifacts=artifacts,
            )
            output = result.output if result.status == "succeeded" else {"error": result.error}
            return ExecuteReply(evidence=evidence, output=output)

        return await self.steps.step(
            agent,
            "execute",
            workflow_id,
            step_key,
            record,
            require_open=not approved,
            redo=approved,
        )

    async def store(self, value: Any) -> str:
        """Content-address a call's full input or output, so an auditor can check every fact."""
        return await self.artifacts.put(msgspec.json.encode(value, order="sorted"))
