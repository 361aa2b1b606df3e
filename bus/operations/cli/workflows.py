"""Commands that steer workflows as the operator: submit work, answer escalations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from nats.aio.client import Client

from bus import telemetry
from bus.operations.cli.common import (
    StateDir,
    app,
    console,
    escalations_app,
    fail,
    fresh_views,
    from_stack_or_ledger,
    ledger_escalations,
    run_as_operator,
    settings_for,
)
from bus.operations.cli.output import show_json
from bus.transport.subjects import Subjects
from handoff_schemas import StartReply


@app.command()
def submit(
    task: str,
    to: Annotated[str, typer.Option("--to", help="The agent that gets the first handoff.")],
    input_file: Annotated[Path, typer.Option("--input", help="The request's input (any bytes).")],
    scope: str = "default",
    budget: Annotated[float | None, typer.Option("--budget", help="Budget in USD.")] = None,
    state_dir: StateDir = None,
) -> None:
    """Start a workflow: store the input as an artifact and hand it to an agent."""
    from bus.operations.operators import submit as submit_workflow

    try:
        data = input_file.read_bytes()
    except OSError as error:
        raise fail(f"cannot read {input_file}: {error}") from None
    telemetry.setup("claimcheck-cli")

    async def start(nc: Client, subjects: Subjects) -> StartReply:
        with telemetry.span(f"submit {task}", **{"gen_ai.agent.name": to}):
            return await submit_workflow(nc, subjects, task, to, data, scope, budget)

    reply = run_as_operator(settings_for(state_dir), start)
    telemetry.shutdown()
    print(reply.workflow_id)


@escalations_app.command("list")
def escalations_list(
    show_all: Annotated[
        bool, typer.Option("--all", help="Resolved ones too, with who answered, when and how.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    state_dir: StateDir = None,
) -> None:
    """Escalations waiting for a human (from the escalation stream); ``--all`` for every one."""
    from bus.operations.operators import escalations

    settings = settings_for(state_dir)
    view = from_stack_or_ledger(settings, escalations, lambda: ledger_escalations(settings))
    shown = [view.get(eid) for eid in view.raised] if show_all else view.open
    if as_json:
        show_json(shown)
        return
    if not shown:
        console.print("no escalations" if show_all else "no open escalations")
    for escalation in shown:
        console.print(
            f"{escalation['escalationId']}  workflow {escalation['workflowId']}  "
            f"{escalation['kind']}  {escalation['agent']}: {escalation['reason']}"
            + (f"  -> {answer_of(escalation)}" if show_all else ""),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def answer_of(escalation: dict) -> str:
    """How a human answered an escalation (who, when, what and why), or that none has yet."""
    resolution = escalation.get("resolution")
    if resolution is None:
        return "open"
    decision = PAST.get(resolution["decision"], resolution["decision"])
    why = f": {resolution['reason']}" if resolution.get("reason") else ""
    return f"{decision} by {resolution['approver']} at {resolution['resolvedAt']}{why}"


PAST = {"approve": "approved", "deny": "denied"}


@escalations_app.command("show")
def escalations_show(escalation_id: str, state_dir: StateDir = None) -> None:
    """One escalation, with the action it holds back or the claim it asks about (the verdict
    and reason on each claimed item)."""
    from bus.operations.operators import escalations
    from projections.ledger_views import claims

    settings = settings_for(state_dir)
    found = from_stack_or_ledger(settings, escalations, lambda: ledger_escalations(settings))
    escalation = found.get(escalation_id)
    if escalation is None:
        raise fail(f"no escalation {escalation_id!r}")
    if escalation.get("claimId"):
        rows = claims(fresh_views(settings), workflow_id=escalation["workflowId"])
        asked = [row for row in rows if row["claim_id"] == escalation["claimId"]]
        escalation["claim"] = asked[0] if asked else None
    show_json(escalation)


def resolve_escalation(
    escalation_id: str,
    decision: str,
    approver: str,
    reason: str,
    state_dir: Path | None,
    corrections: dict[str, Any] | None = None,
) -> None:
    from bus.operations.operators import resolve

    result = run_as_operator(
        settings_for(state_dir),
        lambda nc, subjects: resolve(
            nc, subjects, escalation_id, decision, approver, reason, corrections
        ),
    )
    done = PAST[decision] + (" with changes" if corrections else "")
    workflow, status = result["workflowId"], result["workflowStatus"]
    console.print(f"{done} {escalation_id}; workflow {workflow} is {status}")


Approver = Annotated[str, typer.Option("--as", help="Who decides (recorded in the ledger).")]
Reason = Annotated[str, typer.Option("--reason", help="Why.")]


@escalations_app.command("approve")
def escalations_approve(
    escalation_id: str,
    approver: Approver,
    reason: Reason = "",
    changes: Annotated[
        list[str] | None,
        typer.Option(
            "--with",
            help="Approve with a change to the held action's payload, FIELD=VALUE (repeatable); "
            "the corrected action must pass the policy.",
        ),
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Approve: the held-back action runs with your grant (as corrected with --with), and the
    workflow resumes."""
    corrections = parse_changes(changes or [])
    resolve_escalation(escalation_id, "approve", approver, reason, state_dir, corrections)


def parse_changes(changes: list[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` pairs; a VALUE that reads as JSON (a number, true, a list) is taken
    as that, anything else as text."""
    corrections: dict[str, Any] = {}
    for change in changes:
        field, equals, value = change.partition("=")
        if not equals or not field.strip():
            raise fail(f"--with {change!r}: write it as FIELD=VALUE, like to=legal@acme.example")
        try:
            corrections[field.strip()] = json.loads(value)
        except json.JSONDecodeError:
            corrections[field.strip()] = value
    return corrections


@escalations_app.command("deny")
def escalations_deny(
    escalation_id: str, approver: Approver, reason: Reason = "", state_dir: StateDir = None
) -> None:
    """Deny: the workflow ends, with your reason recorded."""
    resolve_escalation(escalation_id, "deny", approver, reason, state_dir)
