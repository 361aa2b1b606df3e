"""``claimcheck workflows ...``: the operator's controls on a workflow (cancel, terminate, retry,
reset, signal), each recorded in its ledger with who and why."""

from __future__ import annotations

import getpass
import json
from typing import Annotated, Any

import typer
from nats.aio.client import Client

from bus.operations.cli.common import StateDir, app, console, fail, run_as_operator, settings_for
from bus.transport.subjects import Subjects
from handoff_schemas import (
    ControlReply,
    ControlRequest,
    ResetRequest,
    RetryRequest,
    SchemaError,
    SignalRequest,
    StopRequest,
)

workflows_app = typer.Typer(help="Steer a workflow: cancel, terminate, retry, reset, signal.")
app.add_typer(workflows_app, name="workflows")

By = Annotated[
    str,
    typer.Option("--as", help="Who acts (recorded in the ledger) [your user name]."),
]
Why = Annotated[str, typer.Option("--reason", help="Why (recorded in the ledger).")]


def default_name(name: str) -> str:
    return name or getpass.getuser()


def act(op: str, request: ControlRequest, state_dir: Any) -> ControlReply:
    from bus.operations.operators import control

    async def ask(nc: Client, subjects: Subjects) -> ControlReply:
        return await control(nc, subjects, op, request)

    reply: ControlReply = run_as_operator(settings_for(state_dir), ask)
    done = {"cancel": "cancelled", "terminate": "terminated", "retry": "retried"}.get(op, op)
    console.print(
        f"{done} workflow {reply.workflow_id}: now {reply.status}"
        + (f"; {reply.detail}" if reply.detail else ""),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return reply


def request_of(kind: type[ControlRequest], **fields: Any) -> Any:
    """The request, or the field that is wrong said plainly (an empty reason, say)."""
    from handoff_schemas import convert

    try:
        return convert(fields, kind)
    except SchemaError as error:
        raise fail(str(error)) from None


def stopping(how: str, summary: str) -> None:
    """Register ``cancel`` or ``terminate``: one command each, the same request."""

    def stop(workflow: str, reason: Why, by: By = "", state_dir: StateDir = None) -> None:
        request = request_of(StopRequest, workflowId=workflow, by=default_name(by), reason=reason)
        act(how, request, state_dir)

    stop.__doc__ = summary
    workflows_app.command(how)(stop)


stopping(
    "cancel", "Cancel: its agents are refused with `cancelled` at their next request, and stop."
)
stopping(
    "terminate", "Terminate: end it now, recorded as terminated; its agents are refused and stop."
)


@workflows_app.command("retry")
def retry(
    workflow: str,
    reason: Why,
    handoff: Annotated[
        str | None, typer.Option("--handoff", help="The handling to retry [the failed one].")
    ] = None,
    by: By = "",
    state_dir: StateDir = None,
) -> None:
    """Retry a failed workflow: its failed steps run again, the rest replay."""
    request = request_of(
        RetryRequest,
        workflowId=workflow,
        by=default_name(by),
        reason=reason,
        handoffId=handoff,
    )
    act("retry", request, state_dir)


@workflows_app.command("reset")
def reset(
    workflow: str,
    reason: Why,
    to_event: Annotated[
        int | None, typer.Option("--to-event", help="Continue after this event (see `events`).")
    ] = None,
    to_checkpoint: Annotated[
        str | None, typer.Option("--to-checkpoint", help="Continue after this checkpoint.")
    ] = None,
    by: By = "",
    state_dir: StateDir = None,
) -> None:
    """Reset: continue from an event or a checkpoint as a new workflow; prints its id."""
    if (to_event is None) == (to_checkpoint is None):
        raise fail("give one of --to-event N or --to-checkpoint NAME")
    request = request_of(
        ResetRequest,
        workflowId=workflow,
        by=default_name(by),
        reason=reason,
        toEvent=to_event,
        toCheckpoint=to_checkpoint,
    )
    reply = act("reset", request, state_dir)
    print(reply.new_workflow_id)


@workflows_app.command("signal")
def signal(
    workflow: str,
    name: str,
    reason: Why,
    data: Annotated[str, typer.Option("--data", help="The signal's data, a JSON object.")] = "{}",
    by: By = "",
    state_dir: StateDir = None,
) -> None:
    """Send a signal (input) to a workflow; a handling waiting for it goes on with its data."""
    try:
        fields = json.loads(data)
    except json.JSONDecodeError as error:
        raise fail(f"--data is not JSON: {error}") from None
    if not isinstance(fields, dict):
        raise fail("--data must be a JSON object, like '{\"approved\": true}'")
    request = request_of(
        SignalRequest,
        workflowId=workflow,
        by=default_name(by),
        reason=reason,
        name=name,
        data=fields,
    )
    act("signal", request, state_dir)
