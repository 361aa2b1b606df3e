"""The runtime: the trusted service agents ask, with its policy, failure table, the tool SDK
and the tool host that executes side effects."""

from bus.runtime.catalogue import (
    Call,
    CannotConfirm,
    Catalogue,
    ToolFailure,
    ToolSpec,
    differences,
    tool,
)
from bus.runtime.policy import Decision, Policy, PolicyError
from bus.runtime.service import Runtime
from bus.runtime.tool_host import ToolHost

__all__ = [
    "Call",
    "CannotConfirm",
    "Catalogue",
    "Decision",
    "Policy",
    "PolicyError",
    "Runtime",
    "ToolFailure",
    "ToolHost",
    "ToolSpec",
    "differences",
    "tool",
]
