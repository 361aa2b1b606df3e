"""Read models rebuilt from the ledger's events."""

from projections.workflow_state import WorkflowView, project

__all__ = ["WorkflowView", "project"]
