"""The agent SDK: agents reason with a model and ask the runtime for everything else."""

from agents.agent import Agent
from agents.client import RuntimeClient, RuntimeRefused
from agents.context import Context, WorkflowHalted
from agents.model import Model, ModelRequest, ModelResult, ScriptedModel
from handoff_schemas import ClaimItem

__all__ = [
    "Agent",
    "ClaimItem",
    "Context",
    "Model",
    "ModelRequest",
    "ModelResult",
    "RuntimeClient",
    "RuntimeRefused",
    "ScriptedModel",
    "WorkflowHalted",
]
