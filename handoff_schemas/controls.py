"""Operator controls: what a person does to a running workflow from outside it.

Only the operator identity (``<prefix>.rt.cli.<op>``) may send these; the runtime
records each, with ``by`` (who, as the operator named themself) and ``reason``, in the
workflow's ledger. Every one is safe to ask again: the runtime recognises a repeat.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from handoff_schemas.base import WireStruct
from handoff_schemas.limits import Fields, Id, Label, Text

Who = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Why = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class ControlRequest(WireStruct):
    """Fields every control shares: the workflow, who acts, and why (both recorded)."""

    workflow_id: Id
    by: Who
    reason: Why


class StopRequest(ControlRequest):
    """``cancel`` or ``terminate`` (the operation says which): the workflow ends, and its
    agents are refused with that code on their next request."""


class RetryRequest(ControlRequest):
    """Run a failed workflow's failed handling again: its failed steps are forgotten (the
    ones that succeeded replay), and the handoff is delivered again. ``handoffId`` picks the
    handling; by default, the one that failed last."""

    handoff_id: Id | None = None


class ResetRequest(ControlRequest):
    """Continue a workflow from a point of its history as a new workflow (a branch): what
    happened up to event ``toEvent`` (or the checkpoint ``toCheckpoint``) is kept and
    replayed, what came after runs again. The old workflow stays as it was, and is closed."""

    to_event: Annotated[int, msgspec.Meta(ge=1)] | None = None
    to_checkpoint: Label | None = None


class SignalRequest(ControlRequest):
    """Input for a workflow that waits for it (``ctx.wait_for_signal(name)``), or that an
    agent will ask for later: recorded, and a waiting handling is delivered again."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    data: Fields = {}


class ControlReply(WireStruct):
    """The workflow's status after the control; ``newWorkflowId`` for a reset's branch."""

    workflow_id: str
    status: str
    new_workflow_id: str | None = None
    detail: Text = ""


CONTROLS: dict[str, type[WireStruct]] = {
    "cancel": StopRequest,
    "terminate": StopRequest,
    "retry": RetryRequest,
    "reset": ResetRequest,
    "signal": SignalRequest,
}
"""Operator control operations and the request each takes."""
