"""Commands that read the record: events, state, claims, traces, replays, verification and
the auditor."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from nats.aio.client import Client

from bus.ledger import LedgerError
from bus.ledger.workflow import CLOSED_STATUSES
from bus.operations.cli.common import (
    StateDir,
    app,
    audit_app,
    console,
    fail,
    fresh_views,
    from_stack_or_ledger,
    ledger_histories,
    ledger_history,
    open_ledger,
    run,
    settings_for,
    views_app,
)
from bus.operations.cli.output import age, events_json, parse_since, show_json
from bus.settings import Settings
from bus.transport.subjects import Subjects

if TYPE_CHECKING:
    from bus.ledger.ledger_check import Outcome


@app.command()
def events(
    workflow: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    state_dir: StateDir = None,
) -> None:
    """Print a workflow's events, from the ledger."""
    settings = settings_for(state_dir)
    ledger = open_ledger(settings)
    try:
        history = ledger.history(workflow)
    except LedgerError as error:
        raise fail(str(error)) from None
    finally:
        ledger.close()
    if as_json:
        show_json(events_json(history))
        return
    for item in history:
        details = json.dumps(item.data, sort_keys=True)
        console.print(
            f"{item.version:>4} {item.timestamp:%H:%M:%S.%f} {item.type} {details}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def verify(
    workflow: Annotated[str | None, typer.Argument(help="One workflow; all by default.")] = None,
    offline: Annotated[
        bool, typer.Option(help="Check the ledger's chain only, not the stream.")
    ] = False,
    external: Annotated[
        bool,
        typer.Option(
            "--external",
            help="Also ask the tools' own systems (the ticket store, the mail server) whether "
            "each recorded side effect exists as recorded; exit 1 if one does not.",
        ),
    ] = False,
    state_dir: StateDir = None,
) -> None:
    """Check the evidence chain, and the ledger against the events stream; name the first break.

    With ``--external``, every succeeded evidence record is put to its tool's own system;
    the running runtime records each answer in its workflow (``claims`` and ``status`` show
    it beside the claimed items); with the stack down the answers are only printed."""
    from bus.ledger.ledger_check import verify_offline, verify_online
    from bus.operations.services import tune_garbage_collection
    from bus.transport.signing import runtime_verifier

    tune_garbage_collection()  # it may read every event
    settings = settings_for(state_dir)
    verifier = runtime_verifier(settings)  # with the runtime's key, only signed evidence
    ledger = open_ledger(settings)
    try:
        history = ledger.history(workflow) if workflow else None

        async def online(nc: Client, subjects: Subjects) -> Outcome:
            return await verify_online(ledger, nc, subjects, verifier, history)

        found = None if offline else from_stack_or_ledger(settings, online, lambda: None)
        if found is None:
            found = verify_offline(ledger, verifier, history)
    except LedgerError as error:
        raise fail(str(error)) from None
    finally:
        ledger.close()
    if found.broken:
        raise fail(f"broken: {found.broken}")
    if found.compared:
        against = ", and every event matches the events stream"
    else:
        against = "" if offline else " (the events stream was not compared: the stack is down)"
    console.print(
        f"intact: {found.workflows} workflow(s), {found.evidence} evidence record(s) chain{against}"
    )
    if external:
        confirm_externally(settings, ledger_histories(settings, workflow))


def confirm_externally(settings: Settings, histories: dict[str, list]) -> None:
    """Each recorded side effect put to its tool's system; fail if the world contradicts one."""
    from bus.operations.operators import ask_runtime
    from bus.operations.project import find_project
    from bus.runtime.catalogue import load_catalogue
    from bus.runtime.confirmation import check_here
    from handoff_schemas import ConfirmReply, ConfirmRequest, ExternalCheck

    async def asked(nc: Client, subjects: Subjects) -> list[ExternalCheck]:
        """The runtime asks the tools' hosts, and records each answer in the workflow."""
        found = []
        for workflow_id in histories:
            request = ConfirmRequest(workflow_id=workflow_id)
            found += (await ask_runtime(nc, subjects, "confirm", request, ConfirmReply)).checks
        return found

    def here() -> list[ExternalCheck]:
        """The stack is down: the project's tools ask from this process; nothing is recorded."""
        catalogues = [load_catalogue(target) for target in find_project().tools]
        tools = {spec.name: spec for catalogue in catalogues for spec in catalogue}
        records = (
            event.data["evidence"]
            for history in histories.values()
            for event in history
            if event.type == "EvidenceRecorded"
        )
        return run(check_here(tools, settings, records))

    checks = from_stack_or_ledger(settings, asked, here)
    label = {
        "confirmed": "confirmed",
        "contradicted": "CONTRADICTED",
        "unconfirmable": "UNCONFIRMED",
    }
    for found in checks:
        console.print(
            f"{label[found.outcome]:<13} {found.workflow_id} {found.evidence_id} {found.tool}"
            + (f": {'; '.join(found.problems)}" if found.problems else ""),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    contradicted = sum(1 for found in checks if found.outcome == "contradicted")
    unconfirmed = sum(1 for found in checks if found.outcome == "unconfirmable")
    if contradicted:
        raise fail(f"the world contradicts {contradicted} of {len(checks)} recorded side effect(s)")
    console.print(
        f"the world confirms {len(checks) - unconfirmed} of {len(checks)} recorded side effect(s)"
        + (f"; {unconfirmed} could not be asked" if unconfirmed else "")
    )


WORKFLOW_STATUSES = ("running", "waiting", "escalated", *sorted(CLOSED_STATUSES))


@app.command()
def status(
    workflow: Annotated[str | None, typer.Argument(help="One workflow; all by default.")] = None,
    only: Annotated[
        str | None,
        typer.Option(
            "--status", help=f"Only workflows in this status: {', '.join(WORKFLOW_STATUSES)}."
        ),
    ] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="Only workflows with this agent now.")
    ] = None,
    task: Annotated[str | None, typer.Option("--task", help="Only workflows of this task.")] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only workflows started since: 15m, 2h, 7d or an ISO time."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    state_dir: StateDir = None,
) -> None:
    """Workflow state: status, times, current step, steps, checkpoints, cost, why an open one
    waits, and its claims with the verdict on each claimed item."""
    from projections.claim_text import claim_lines, world_text
    from projections.ledger_views import workflow_states

    if only is not None and only not in WORKFLOW_STATUSES:
        raise fail(f"--status {only!r} is not a status: one of {', '.join(WORKFLOW_STATUSES)}")
    try:
        started = None if since is None else parse_since(since).isoformat()
    except ValueError as error:
        raise fail(str(error)) from None
    settings = settings_for(state_dir)
    rows = workflow_states(
        fresh_views(settings), workflow, status=only, agent=agent, task=task, since=started
    )
    if workflow and not rows:
        raise fail(f"no workflow {workflow!r}")
    add_waiting(settings, rows)
    add_age(rows)
    if as_json:
        show_json(rows)
        return
    if not rows:
        console.print("no workflow matches")
    for row in rows:
        waits = f"  waits for {row['waiting']}" if row["waiting"] else ""
        waits += f"  why: {row['outcome']}" if row["outcome"] else ""
        if row["last_fault"] and row["last_fault"] not in row["outcome"]:
            waits += f"  last fault: {row['last_fault']}"
        console.print(
            f"{row['workflow_id']}  {row['status']:<10} {row['task']}  "
            f"agent {row['agent'] or '-'}  started {row['started_at'][:19]}Z  "
            f"age {age(row['age_seconds'])}  updated {age(row['idle_seconds'])} ago  "
            f"steps {row['completed_steps']}  now {row['current_step'] or '-'}  "
            f"cost {row['cost_usd']:.6f}/{row['budget_usd']} USD  "
            f"checkpoints {checkpoint_text(row['checkpoint_evidence']) or '-'}{waits}",
            *[line for claim in row["claims"] for line in claim_lines(claim)],
            *[
                f"  evidence {evidence_id}{world_text(check)}"
                for evidence_id, check in row["unconfirmed_evidence"].items()
            ],
            sep="\n",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def checkpoint_text(backing: dict[str, list[str]]) -> str:
    """Each checkpoint as the agent declared it, beside the evidence that backs it, or not."""
    return ", ".join(
        f"{name} (declared; backed by {', '.join(ids)})"
        if ids
        else f"{name} (declared; no evidence backs it)"
        for name, ids in backing.items()
    )


def add_age(rows: list[dict[str, Any]]) -> None:
    """How long each workflow has run (to now, or to its end) and since its latest change."""
    now = datetime.now(UTC)
    for row in rows:
        started = datetime.fromisoformat(row["started_at"])
        updated = datetime.fromisoformat(row["updated_at"])
        end = updated if row["status"] in CLOSED_STATUSES else now
        row["age_seconds"] = round((end - started).total_seconds(), 3)
        row["idle_seconds"] = round((now - updated).total_seconds(), 3)


def add_waiting(settings: Settings, rows: list[dict[str, Any]]) -> None:
    """Say why each open workflow waits, and why one that did not complete ended (with the
    last fault an agent reported): only those are folded from the ledger."""
    from projections import project

    unfinished = [row for row in rows if row["status"] != "completed"]
    histories = {}
    if unfinished:
        ledger = open_ledger(settings)
        try:
            histories = {
                row["workflow_id"]: ledger.history(row["workflow_id"]) for row in unfinished
            }
        finally:
            ledger.close()
    for row in rows:
        history = histories.get(row["workflow_id"])
        view = project(row["workflow_id"], history) if history else None
        row["waiting"] = view.waiting if view else ""
        row["outcome"] = view.outcome if view and row["status"] in CLOSED_STATUSES else ""
        fault = view.faults[-1] if view and view.faults else None
        row["last_fault"] = (
            f"{fault['kind'].replace('_', ' ')}: {fault['error_type']}: {fault['message']}"
            if fault
            else ""
        )


@app.command()
def claims(
    unverified: Annotated[
        bool, typer.Option("--unverified", help="Only claims not verified.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    state_dir: StateDir = None,
) -> None:
    """Claims agents made, with the runtime's verdict on each and on each claimed item."""
    from projections.claim_text import claim_lines
    from projections.ledger_views import claims as claim_rows

    rows = claim_rows(fresh_views(settings_for(state_dir)), unverified_only=unverified)
    if as_json:
        show_json(rows)
        return
    for row in rows:
        console.print(
            f"{row['verdict']:<12} {row['workflow_id']}  {row['agent']}: {row['statement']!r}\n"
            + "\n".join(claim_lines(row, indent="  ")[1:]),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def trace(workflow: str, state_dir: StateDir = None) -> None:
    """A workflow's timeline: beliefs, decisions, executions, evidence, verdicts and cost."""
    from projections.trace import timeline

    for line in timeline(ledger_history(settings_for(state_dir), workflow)):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command()
def replay(
    workflow: str,
    until: Annotated[int | None, typer.Option("--until", help="Stop after event N.")] = None,
    state_dir: StateDir = None,
) -> None:
    """The workflow's state as it was after event N, rebuilt with today's code."""
    from bus.ledger.replay import ReplayError, summary
    from bus.ledger.replay import replay as replay_history

    history = ledger_history(settings_for(state_dir), workflow)
    if until is not None and not 1 <= until <= len(history):
        raise fail(f"--until {until} is outside this workflow's events (1 to {len(history)})")
    try:
        show_json(summary(replay_history(history, until)))
    except ReplayError as error:
        raise fail(str(error)) from None


@audit_app.command("follow")
def audit_follow(
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 at the first chain break.")
    ] = False,
    idle: Annotated[
        float | None, typer.Option("--idle", help="Stop after N quiet seconds.")
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Follow the evidence stream read-only: check the chain live and show flagged claims."""
    from bus.operations.audit import Finding, follow, from_ledger
    from bus.transport.signing import runtime_verifier

    settings = settings_for(state_dir)
    verifier = runtime_verifier(settings)  # with the runtime's key, only signed evidence
    auditor = settings.state_dir / "credentials" / "auditor.json"
    if settings.credentials is None and auditor.exists():
        settings.credentials = auditor
    broken: list[Finding] = []

    def report(finding: Finding) -> bool:
        if finding.kind == "claim" and finding.record["verdict"] == "verified":
            return True
        label = {"evidence": "ok   ", "break": "BREAK", "claim": "FLAG "}.get(finding.kind, "SKIP ")
        console.print(f"{label} {finding.text}", markup=False, highlight=False, soft_wrap=True)
        if finding.kind == "break":
            broken.append(finding)
            return not strict
        return True

    from_stack_or_ledger(
        settings,
        lambda nc, subjects: follow(nc, subjects, report, idle, verifier),
        lambda: from_ledger(
            (e for history in ledger_histories(settings).values() for e in history),
            report,
            verifier,
        ),
    )
    if broken and strict:
        raise typer.Exit(code=1)


@views_app.command("rebuild")
def views_rebuild(state_dir: StateDir = None) -> None:
    """Drop the read models and rebuild them from the first event."""
    from bus.ledger.view_runner import rebuild_views
    from bus.operations.services import tune_garbage_collection

    tune_garbage_collection()  # it reads every event
    settings = settings_for(state_dir)
    ledger = open_ledger(settings)
    try:
        position = rebuild_views(settings, ledger)
    finally:
        ledger.close()
    console.print(f"rebuilt the views up to event position {position}")
