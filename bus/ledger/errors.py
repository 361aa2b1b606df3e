"""Why the ledger refuses a command: each error carries the wire code the runtime replies with."""

from __future__ import annotations


class LedgerError(Exception):
    """A command the ledger refuses; ``code`` is the wire error code."""

    code = "invalid_request"


class UnknownWorkflow(LedgerError):
    code = "unknown_workflow"


class WorkflowClosed(LedgerError):
    code = "workflow_closed"


class Cancelled(WorkflowClosed):
    """An operator cancelled the workflow: its agents stop at their next request."""

    code = "cancelled"


class Terminated(WorkflowClosed):
    """An operator terminated the workflow: its agents stop at their next request."""

    code = "terminated"


class InvalidHandoff(LedgerError):
    code = "invalid_handoff"


class NotAParticipant(LedgerError):
    code = "permission_denied"


class WorkflowEscalated(LedgerError):
    code = "escalated"


class UnknownEscalation(LedgerError):
    code = "invalid_request"
