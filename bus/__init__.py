"""The bus: the NATS transport, the ledger, the runtime that governs, and the operations
that run them. What a user deploys or configures is importable from here."""

from bus.ledger import Ledger, Workflow
from bus.operations.stack import Stack
from bus.runtime import (
    Call,
    CannotConfirm,
    Catalogue,
    Decision,
    Policy,
    PolicyError,
    Runtime,
    ToolFailure,
    ToolHost,
    ToolSpec,
    tool,
)
from bus.settings import Settings
from bus.transport.subjects import Subjects

__all__ = [
    "Call",
    "CannotConfirm",
    "Catalogue",
    "Decision",
    "Ledger",
    "Policy",
    "PolicyError",
    "Runtime",
    "Settings",
    "Stack",
    "Subjects",
    "ToolFailure",
    "ToolHost",
    "ToolSpec",
    "Workflow",
    "tool",
]
