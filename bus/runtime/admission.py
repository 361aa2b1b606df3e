"""Admitting a tool call: the tool as its host registered it, and a payload that fits.

The runtime learns tools from the registry (:mod:`bus.runtime.registry`). A tool not
registered yet (its host may be starting) is waited for within the availability window,
each look a ``ToolUnavailable`` event, and then refused; a payload that breaks the
registered input schema is refused with field errors and the failure table's advice.
Each refusal is recorded as the step's reply, so it is in the ledger, not only in a log.
"""

from __future__ import annotations

from typing import NoReturn

from nats.aio.client import Client

from bus.ledger import Workflow
from bus.runtime.availability import InFlight, ToolCaller, ToolUnavailable
from bus.runtime.governance import after_failure
from bus.runtime.policy import Policy
from bus.runtime.protocol import Refusal
from bus.runtime.registry import ToolRegistry, payload_problems
from bus.runtime.steps import Steps
from bus.settings import Settings
from bus.transport.signing import Signer
from handoff_schemas import ExecuteRequest, FieldError, ToolDescription


class Admission:
    def __init__(
        self,
        steps: Steps,
        policy: Policy,
        tools: ToolRegistry,
        nc: Client,
        settings: Settings,
        signer: Signer,
    ) -> None:
        self.steps = steps
        self.policy = policy
        self.tools = tools
        self.nc = nc
        self.settings = settings  # read per call: the window may be tuned while serving
        self.signer = signer
        self._registering: InFlight[ToolDescription] = InFlight()

    async def admit(self, agent: str, request: ExecuteRequest) -> ToolDescription:
        """The tool of an admissible call; a refusal (recorded) otherwise."""
        tool = await self._described(agent, request)
        problems = payload_problems(tool.input_schema, request.payload)
        if problems:
            await self._invalid_payload(agent, request, problems)
        return tool

    async def _described(self, agent: str, request: ExecuteRequest) -> ToolDescription:
        """The tool as its host registered it. One not registered (yet: a host may be starting)
        is waited for within the availability window, each look a ``ToolUnavailable`` event;
        then the call is refused."""
        tool = await self.tools.get(request.tool)
        if tool is not None:
            return tool
        await self.steps.command(request.workflow_id, lambda wf: wf.require_participant(agent))
        action = {"tool": request.tool, "resource": "", "payload": request.payload}
        caller = ToolCaller(
            self.nc,
            self.steps,
            self.settings,
            agent,
            request.workflow_id,
            request.step_key,
            action,
            self.signer,
        )
        try:  # an agent asking again while the runtime waits joins the same wait
            return await self._registering.join(
                f"{request.workflow_id}/{request.step_key}",
                lambda: caller.registered(lambda: self.tools.get(request.tool)),
            )
        except ToolUnavailable:
            await self._unknown_tool(agent, request)

    async def _unknown_tool(self, agent: str, request: ExecuteRequest) -> NoReturn:
        """Refuse, and record as the step's reply, a call to a tool no tool host serves."""
        served = await self.tools.names()
        waited = self.settings.tool_availability_window
        refusal = Refusal(
            "invalid_request",
            f"no tool host serves {request.tool!r} (waited {waited:g}s for one to register); "
            f"served: {', '.join(served) or 'none'}",
            [FieldError(field="tool", message=f"unknown tool {request.tool!r}")],
        )

        def refuse(workflow: Workflow) -> None:
            raise refusal

        await self.steps.step(agent, "execute", request.workflow_id, request.step_key, refuse)
        raise AssertionError("unreachable: step() re-raises the refusal")

    async def _invalid_payload(
        self, agent: str, request: ExecuteRequest, fields: list[FieldError]
    ) -> NoReturn:
        """Record an invalid payload as the step's reply, with the runtime's advice (repair?)."""
        detail = "; ".join(f"{f.field}: {f.message}" for f in fields)

        def refuse(workflow: Workflow) -> None:
            advice = after_failure(
                workflow, self.policy, agent, "invalid_tool_payload", detail, request.step_key
            )
            raise Refusal(
                "invalid_tool_payload",
                f"invalid {request.tool} payload: {detail}",
                fields,
                retry=advice,
            )

        await self.steps.step(agent, "execute", request.workflow_id, request.step_key, refuse)
        raise AssertionError("unreachable: step() re-raises the refusal")
