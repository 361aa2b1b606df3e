"""``claimcheck show WORKFLOW``: one workflow in full, for the person debugging it: where it
stands, why it ended or waits, the faults its agents reported (with their stack traces),
what operators and humans did, and how it links to a reset's other end."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from bus.operations.cli.common import StateDir, app, console, ledger_history, settings_for
from bus.operations.cli.output import show_json


def say(line: str) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command()
def show(
    workflow: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    state_dir: StateDir = None,
) -> None:
    """One workflow: status, why it ended or waits, faults with stack traces, operators' actions."""
    from projections import project

    history = ledger_history(settings_for(state_dir), workflow)
    view = project(workflow, history)
    if as_json:
        show_json({**dataclasses.asdict(view), "waiting": view.waiting})
        return
    say(f"workflow {view.workflow_id}: {view.status}  task {view.task}")
    say(f"  started {history[0].timestamp.isoformat()}  last event {view.last_event_at}")
    say(f"  agents {', '.join(view.agents) or '-'}; {view.events} events")
    if view.outcome:
        say(f"  outcome: {view.outcome}")
    if view.waiting:
        say(f"  waits for {view.waiting}")
    if view.reset_from:
        say(
            f"  branch of workflow {view.reset_from['workflowId']} "
            f"from its event {view.reset_from['version']}"
        )
    if view.reset_to:
        say(f"  continues as workflow {view.reset_to}")
    for fault in view.faults:
        say(
            f"  fault: {fault['agent']} on handoff {fault['handoff_id']} (delivery "
            f"{fault['delivery']}), {fault['kind'].replace('_', ' ')}: {fault['error_type']}: "
            f"{fault['message']}"
        )
        for line in fault["trace"].rstrip().splitlines():
            say(f"    | {line}")
    for done in view.controls:
        said = {k: v for k, v in done.items() if k not in ("event", "state")}
        say(f"  {done['event']}: {said}")
    for escalation in view.escalations:
        answer = next(
            (r for r in view.resolutions if r["escalationId"] == escalation["escalationId"]), None
        )
        how = (
            f"{answer['decision']} by {answer['approver']} at {answer['resolvedAt']}"
            if answer
            else "open"
        )
        say(f"  escalation {escalation['escalationId']} ({escalation['kind']}): {how}")
    for claim in view.claims:
        say(f"  claim by {claim['agent']}: {claim['verdict']} ({claim['reason']})")
