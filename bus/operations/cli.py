"""The ``claimcheck`` command line."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import msgspec
import typer
from nats.aio.client import Client
from nats.errors import Error as NatsError
from rich.console import Console

from bus import telemetry
from bus.ledger import Ledger, LedgerError
from bus.runtime.policy import PolicyError
from bus.settings import Settings
from bus.transport.subjects import OPERATOR, Subjects
from handoff_schemas import StartReply

app = typer.Typer(
    help="An event-sourced, governed message bus for multi-agent AI workflows.",
    no_args_is_help=True,
)
tools_app = typer.Typer(help="Tool hosts.", no_args_is_help=True)
agent_app = typer.Typer(help="Agents.", no_args_is_help=True)
schemas_app = typer.Typer(help="Wire schemas.", no_args_is_help=True)
escalations_app = typer.Typer(help="Questions for humans.", no_args_is_help=True)
views_app = typer.Typer(help="Read models.", no_args_is_help=True)
audit_app = typer.Typer(help="Read-only auditing.", no_args_is_help=True)
app.add_typer(tools_app, name="tools")
app.add_typer(agent_app, name="agent")
app.add_typer(schemas_app, name="schemas")
app.add_typer(escalations_app, name="escalations")
app.add_typer(views_app, name="views")
app.add_typer(audit_app, name="audit")

T = TypeVar("T")
console = Console()
StateDir = Annotated[
    Path | None, typer.Option("--state-dir", help="State directory [.claimcheck].")
]


def settings_for(state_dir: Path | None) -> Settings:
    return Settings(state_dir=state_dir) if state_dir else Settings()


def fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/] {message}")
    return typer.Exit(code=1)


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


@app.command()
def runtime(state_dir: StateDir = None) -> None:
    """Run the runtime: the only ledger writer, answering agents over NATS."""
    from bus.operations.services import run_runtime

    configure_logging()
    try:
        asyncio.run(run_runtime(settings_for(state_dir)))
    except PolicyError as error:
        raise fail(f"bad policy: {error}") from None


@tools_app.command("serve")
def tools_serve(state_dir: StateDir = None) -> None:
    """Run a tool host serving send_email and create_ticket."""
    from bus.operations.services import run_tool_host

    configure_logging()
    asyncio.run(run_tool_host(settings_for(state_dir)))


@agent_app.command("run")
def agent_run(
    target: Annotated[str, typer.Argument(help="MODULE:OBJECT, e.g. agents.complaints:triage")],
    state_dir: StateDir = None,
) -> None:
    """Run one agent as this process."""
    from bus.operations.services import until_stopped

    configure_logging()
    module_name, _, attribute = target.partition(":")
    try:
        agent = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise fail(f"cannot load {target}: {error}") from None

    async def main() -> None:
        telemetry.setup(f"claimcheck-agent-{agent.name}")
        stop = asyncio.Event()
        consumer = asyncio.create_task(agent.run(settings_for(state_dir), stop))
        await until_stopped()
        stop.set()
        await consumer
        telemetry.shutdown()

    asyncio.run(main())


@app.command()
def up(
    state_dir: StateDir = None,
    local_smtp: Annotated[
        bool, typer.Option("--local-smtp", help="Run a local SMTP server that prints what it gets.")
    ] = False,
) -> None:
    """Start nats-server, the runtime, a tool host and the example agents, in the foreground."""
    from bus.operations.mailbox import Mailbox
    from bus.operations.services import until_stopped
    from bus.operations.stack import Stack

    settings = settings_for(state_dir)
    mailbox = Mailbox(
        port=settings.smtp_port,
        on_message=lambda m: console.print(
            f"SMTP server received: {m['To']}: {m['Subject']}", markup=False, highlight=False
        ),
    )

    async def main() -> None:
        async with Stack(settings) as stack:
            console.print(
                f"claimcheck is up: NATS at {settings.nats_url}, state in {settings.state_dir}"
            )
            console.print(f"processes: {', '.join(stack.processes)}; Ctrl-C stops them all")
            if local_smtp:
                console.print(f"local SMTP server on 127.0.0.1:{settings.smtp_port}")
            await until_stopped()

    if local_smtp:
        mailbox.start()
    try:
        asyncio.run(main())
    finally:
        if local_smtp:
            mailbox.stop()


def run_as_operator(settings: Settings, action: Callable[[Client, Subjects], Awaitable[T]]) -> T:
    """Connect as the operator, run ``action``, and turn a refusal into a clean exit.

    Without ``CLAIMCHECK_CREDENTIALS``, the operator credentials that ``claimcheck
    up`` wrote to the state directory are used.
    """
    from bus.operations.operators import OperatorError
    from bus.transport.connection import connect

    discovered = settings.state_dir / "credentials" / f"{OPERATOR}.json"
    if settings.credentials is None and discovered.exists():
        settings.credentials = discovered

    async def main() -> T:
        nc = await connect(settings, "claimcheck-cli")
        try:
            return await action(nc, Subjects(settings.prefix))
        finally:
            await nc.close()

    try:
        return asyncio.run(main())
    except OperatorError as error:
        raise fail(str(error)) from None
    except (NatsError, OSError, TimeoutError) as error:
        raise fail(
            f"NATS at {settings.nats_url} did not serve this request ({type(error).__name__}: "
            f"{error}); is `claimcheck up` running for this state directory?"
        ) from None


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
    show_all: Annotated[bool, typer.Option("--all", help="Resolved ones too.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    state_dir: StateDir = None,
) -> None:
    """Escalations waiting for a human (from the escalation stream)."""
    from bus.operations.operators import escalations

    view = run_as_operator(settings_for(state_dir), escalations)
    shown = [view.get(eid) for eid in view.raised] if show_all else view.open
    if as_json:
        print(json.dumps(shown))
        return
    if not shown:
        console.print("no open escalations")
    for escalation in shown:
        console.print(
            f"{escalation['escalationId']}  workflow {escalation['workflowId']}  "
            f"{escalation['kind']}  {escalation['agent']}: {escalation['reason']}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@escalations_app.command("show")
def escalations_show(escalation_id: str, state_dir: StateDir = None) -> None:
    """One escalation, with the action it holds back."""
    from bus.operations.operators import escalations

    escalation = run_as_operator(settings_for(state_dir), escalations).get(escalation_id)
    if escalation is None:
        raise fail(f"no escalation {escalation_id!r}")
    print(json.dumps(escalation, indent=2))


def resolve_escalation(
    escalation_id: str, decision: str, approver: str, reason: str, state_dir: Path | None
) -> None:
    from bus.operations.operators import resolve

    result = run_as_operator(
        settings_for(state_dir),
        lambda nc, subjects: resolve(nc, subjects, escalation_id, decision, approver, reason),
    )
    done = {"approve": "approved", "deny": "denied"}[decision]
    workflow, status = result["workflowId"], result["workflowStatus"]
    console.print(f"{done} {escalation_id}; workflow {workflow} is {status}")


Approver = Annotated[str, typer.Option("--as", help="Who decides (recorded in the ledger).")]
Reason = Annotated[str, typer.Option("--reason", help="Why.")]


@escalations_app.command("approve")
def escalations_approve(
    escalation_id: str, approver: Approver, reason: Reason = "", state_dir: StateDir = None
) -> None:
    """Approve: the held-back action runs with your grant, and the workflow resumes."""
    resolve_escalation(escalation_id, "approve", approver, reason, state_dir)


@escalations_app.command("deny")
def escalations_deny(
    escalation_id: str, approver: Approver, reason: Reason = "", state_dir: StateDir = None
) -> None:
    """Deny: the workflow ends, with your reason recorded."""
    resolve_escalation(escalation_id, "deny", approver, reason, state_dir)


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
        print(msgspec.json.encode(history).decode())
        return
    for item in history:
        details = json.dumps(item.data, sort_keys=True)
        console.print(
            f"{item.version:>4} {item.timestamp:%H:%M:%S.%f} {item.type} {details}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def open_ledger(settings: Settings) -> Ledger:
    try:
        return Ledger.from_url(settings.ledger_url())
    except Exception as error:  # a missing file, a refused connection, a bad URL
        raise fail(f"cannot open the ledger at {settings.ledger_url()}: {error}") from None


@app.command()
def verify(
    workflow: Annotated[str | None, typer.Argument(help="One workflow; all by default.")] = None,
    offline: Annotated[
        bool, typer.Option(help="Check the ledger's chain only, not the stream.")
    ] = False,
    state_dir: StateDir = None,
) -> None:
    """Check the evidence chain, and the ledger against the events stream; name the first break."""
    from bus.ledger.verification import first_break, published_events
    from bus.transport.signing import runtime_verifier

    settings = settings_for(state_dir)
    ledger = open_ledger(settings)
    try:
        workflows = [workflow] if workflow else ledger.workflow_ids()
        histories = {wf: ledger.history(wf) for wf in workflows}
    except LedgerError as error:
        raise fail(str(error)) from None
    finally:
        ledger.close()

    async def published(nc: Client, subjects: Subjects) -> dict[str, list]:
        return {wf: await published_events(nc, subjects, wf) for wf in workflows}

    copies = {} if offline else run_as_operator(settings, published)
    verifier = runtime_verifier(settings)  # with the runtime's key, only signed evidence
    for workflow_id, history in histories.items():
        broken = first_break(history, None if offline else copies[workflow_id], verifier)
        if broken:
            raise fail(f"broken: {broken}")
    evidence = sum(1 for h in histories.values() for e in h if e.type == "EvidenceRecorded")
    against = "" if offline else ", and every event matches the events stream"
    console.print(
        f"intact: {len(workflows)} workflow(s), {evidence} evidence record(s) chain{against}"
    )


def ledger_history(settings: Settings, workflow: str) -> list:
    ledger = open_ledger(settings)
    try:
        return ledger.history(workflow)
    except LedgerError as error:
        raise fail(str(error)) from None
    finally:
        ledger.close()


def fresh_views(settings: Settings):  # type: ignore[no-untyped-def]
    """The read models, caught up with the ledger first."""
    from bus.ledger.view_runner import ViewRunner, open_views

    ledger = open_ledger(settings)
    try:
        views = open_views(settings)
        ViewRunner(ledger, views).catch_up()
    finally:
        ledger.close()
    return views


def show_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


@app.command()
def status(
    workflow: Annotated[str | None, typer.Argument(help="One workflow; all by default.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    state_dir: StateDir = None,
) -> None:
    """Workflow state: status, current step, completed steps, checkpoints and cost."""
    from projections.ledger_views import workflow_states

    rows = workflow_states(fresh_views(settings_for(state_dir)), workflow)
    if workflow and not rows:
        raise fail(f"no workflow {workflow!r}")
    if as_json:
        show_json(rows)
        return
    for row in rows:
        console.print(
            f"{row['workflow_id']}  {row['status']:<10} {row['task']}  "
            f"steps {row['completed_steps']}  now {row['current_step'] or '-'}  "
            f"cost {row['cost_usd']:.6f}/{row['budget_usd']} USD  "
            f"checkpoints {', '.join(row['checkpoints']) or '-'}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def claims(
    unverified: Annotated[
        bool, typer.Option("--unverified", help="Only claims not verified.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    state_dir: StateDir = None,
) -> None:
    """Claims agents made, with the runtime's verdict on each."""
    from projections.ledger_views import claims as claim_rows

    rows = claim_rows(fresh_views(settings_for(state_dir)), unverified_only=unverified)
    if as_json:
        show_json(rows)
        return
    for row in rows:
        console.print(
            f"{row['verdict']:<12} {row['workflow_id']}  {row['agent']}: {row['statement']!r} "
            f"asserts {row['asserts']} citing {row['evidence_ids']} ({row['reason']})",
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
    from bus.operations.audit import Finding, follow
    from bus.transport.signing import runtime_verifier

    settings = settings_for(state_dir)
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

    verifier = runtime_verifier(settings)
    run_as_operator(settings, lambda nc, subjects: follow(nc, subjects, report, idle, verifier))
    if broken and strict:
        raise typer.Exit(code=1)


@views_app.command("rebuild")
def views_rebuild(state_dir: StateDir = None) -> None:
    """Drop the read models and rebuild them from the first event."""
    from bus.ledger.view_runner import rebuild_views

    settings = settings_for(state_dir)
    ledger = open_ledger(settings)
    try:
        position = rebuild_views(settings, ledger)
    finally:
        ledger.close()
    console.print(f"rebuilt the views up to event position {position}")


@app.command()
def bench(
    count: Annotated[int, typer.Option(help="Operations per path.")] = 1000,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once.")] = 16,
) -> None:
    """Measure each hot path next to its raw baseline, on a private nats-server and disk."""
    from bus.operations.bench import run_bench

    results = asyncio.run(run_bench(count, concurrency))
    print(f"{'path':<36} {'ops/s':>8}   {'baseline':<22} {'ops/s':>8}  ratio")
    for result in results:
        print(
            f"{result.path:<36} {result.ops_per_second:>8.0f}   {result.baseline:<22} "
            f"{result.baseline_ops_per_second:>8.0f}  {result.ratio:5.2f}"
        )


@app.command()
def demo(state_dir: StateDir = None) -> None:
    """Run the complaint demo with every part as a real process, then stop them all."""
    from bus.operations.demo import run_demo

    result = asyncio.run(run_demo(settings_for(state_dir or Path(".claimcheck"))))
    unsettled = [view.workflow_id for view in result.views if not view.settled]
    if unsettled:
        raise fail(f"workflows did not finish: {unsettled}")


@schemas_app.command("export")
def schemas_export(directory: Path) -> None:
    """Write one JSON Schema file per wire type."""
    from handoff_schemas import export_schemas

    for path in export_schemas(directory):
        console.print(str(path))


if __name__ == "__main__":
    sys.exit(app())
