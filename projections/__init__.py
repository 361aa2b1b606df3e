"""Read models rebuilt from the ledger's events."""

from projections.escalations import EscalationsView, fold_escalations
from projections.workflow_state import WorkflowView, project

__all__ = ["EscalationsView", "WorkflowView", "fold_escalations", "project"]
