"""Storing and reading artifacts for agents and the operator, who have no rights on the store.

An agent stores an artifact in a workflow it takes part in, and reads one only if that
workflow refers to it (a handoff's input, a tool call's evidence) and it takes part in
the workflow: knowing an artifact's id is not enough to read another customer's input.
The operator stores a new workflow's input before the workflow exists, and reads any.
"""

from __future__ import annotations

from bus.ledger import Workflow
from bus.runtime.protocol import Handler, Refusal
from bus.runtime.security import SecurityLog
from bus.runtime.steps import Steps
from bus.transport.artifacts import ArtifactError, ArtifactStore
from bus.transport.subjects import OPERATOR
from handoff_schemas import ArtifactGetRequest, ArtifactPutReply, ArtifactPutRequest, ArtifactReply


class ArtifactHandlers:
    def __init__(self, steps: Steps, artifacts: ArtifactStore, security: SecurityLog) -> None:
        self.steps = steps
        self.artifacts = artifacts
        self.security = security

    def operations(self) -> dict[str, Handler]:
        return {"artifact_put": self.put, "artifact_get": self.get}

    async def put(self, agent: str, request: ArtifactPutRequest) -> ArtifactPutReply:
        if request.workflow_id is not None:
            await self.steps.read(request.workflow_id, lambda wf: wf.require_reader(agent))
        elif agent != OPERATOR:
            await self._refuse(agent, "artifact_put", "an agent stores artifacts in a workflow")
        identifier = await self.artifacts.put(request.data)
        return ArtifactPutReply(artifact_id=identifier, size=len(request.data))

    async def get(self, agent: str, request: ArtifactGetRequest) -> ArtifactReply:
        if request.workflow_id is not None:

            def check(workflow: Workflow) -> None:
                workflow.require_artifact_reader(agent, request.artifact_id)

            await self.steps.read(request.workflow_id, check)
        elif agent != OPERATOR:
            await self._refuse(agent, "artifact_get", "an agent reads artifacts of a workflow")
        try:
            data = await self.artifacts.get(request.artifact_id)
        except ArtifactError as error:
            raise Refusal("invalid_request", str(error)) from None
        return ArtifactReply(artifact_id=request.artifact_id, data=data)

    async def _refuse(self, agent: str, op: str, reason: str) -> None:
        await self.security.record(agent, op, "no_workflow", reason)
        raise Refusal("permission_denied", f"{reason}: name its workflowId")
