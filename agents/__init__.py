"""The agent SDK: agents reason with a model and ask the runtime for everything else.

What an agent's author imports is here; the modules behind it are internals.
"""

from agents.agent import Agent
from agents.anthropic_model import AnthropicModel, default_model
from agents.client import RuntimeClient, RuntimeRefused
from agents.context import Context, WorkflowHalted
from agents.model import Model, ModelRequest, ModelResult, ScriptedModel

__all__ = [
    "Agent",
    "AnthropicModel",
    "Context",
    "Model",
    "ModelRequest",
    "ModelResult",
    "RuntimeClient",
    "RuntimeRefused",
    "ScriptedModel",
    "WorkflowHalted",
    "default_model",
]
