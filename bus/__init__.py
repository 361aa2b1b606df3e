"""The bus: NATS transport, the ledger, the runtime that governs, tool hosting and the relay."""

from bus.ledger import Ledger, Workflow
from bus.policy import Decision, Policy, PolicyError
from bus.settings import Settings
from bus.stack import Stack
from bus.subjects import Subjects

__all__ = [
    "Decision",
    "Ledger",
    "Policy",
    "PolicyError",
    "Settings",
    "Stack",
    "Subjects",
    "Workflow",
]
