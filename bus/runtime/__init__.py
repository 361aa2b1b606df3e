"""The runtime: the trusted service agents ask, with its policy, failure table, tool catalogue
and the tool host that executes side effects."""

from bus.runtime.catalogue import CATALOGUE, Tool, ToolFailure
from bus.runtime.policy import Decision, Policy, PolicyError
from bus.runtime.service import Runtime
from bus.runtime.tool_host import ToolHost

__all__ = [
    "CATALOGUE",
    "Decision",
    "Policy",
    "PolicyError",
    "Runtime",
    "Tool",
    "ToolFailure",
    "ToolHost",
]
