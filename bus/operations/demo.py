"""``claimcheck demo``: the mission's example, end to end, with every part a real process.

Three complaints go to the triage agent: one that must be escalated by email,
one that needs no escalation, and one whose escalation address the policy does
not allow. The demo prints each workflow's outcome and evidence, and what the
local SMTP server received, then stops everything it started.

A model that does not answer is retried by the runtime only within a short
availability window (``DEMO_MODEL_WINDOW``, unless ``CLAIMCHECK_MODEL_AVAILABILITY_WINDOW``
is set), so an unreachable model ends the demo in seconds with the reason, instead
of leaving it waiting.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass

from rich.console import Console

from bus.operations.mailbox import Mailbox
from bus.operations.operators import submit, watch
from bus.operations.progress import Progress
from bus.operations.stack import Stack
from bus.settings import Settings
from bus.transport.connection import connect
from bus.transport.subjects import Subjects
from projections import WorkflowView
from projections.claim_text import claim_lines

COMPLAINTS = [
    {
        "customer": "northwind",
        "channel": "email",
        "text": "Your outage took our shop offline for a whole day. We want a refund.",
    },
    {
        "customer": "contoso",
        "channel": "chat",
        "text": "The invoice PDF has a typo in my street name.",
    },
    {
        "customer": "fabrikam",
        "channel": "phone",
        "text": "I am a journalist writing about your data leak and need a statement.",
    },
]


DEMO_MODEL_WINDOW = 2.0
"""Seconds the demo's runtime waits out an unavailable model before failing a workflow."""


@dataclass
class DemoResult:
    views: list[WorkflowView]
    emails: list[str]


async def run_demo(settings: Settings, console: Console | None = None) -> DemoResult:
    console = console or Console()
    mailbox = Mailbox(maildir=settings.maildir_path())  # `verify --external` reads it
    await asyncio.to_thread(mailbox.start)
    settings.smtp_port = mailbox.port
    console.print(f"[bold]claimcheck demo[/] state in {settings.state_dir.resolve()}")
    if "model_availability_window" not in settings.model_fields_set:
        settings.model_availability_window = DEMO_MODEL_WINDOW
    if os.environ.get("ANTHROPIC_API_KEY"):
        console.print(f"model: AnthropicModel ({settings.model}), because ANTHROPIC_API_KEY is set")
    else:
        console.print("model: ScriptedModel (offline; set ANTHROPIC_API_KEY to use Claude)")
    try:
        async with Stack(settings) as stack:
            console.print(
                f"started nats-server at {settings.nats_url}, and processes: "
                + ", ".join(stack.processes)
            )
            views = await run_complaints(settings, console)
    finally:
        await asyncio.to_thread(mailbox.stop)
    emails = [f"{m['To']}: {m['Subject']}" for m in mailbox.received]
    show(console, views, emails)
    return DemoResult(views, emails)


async def run_complaints(settings: Settings, console: Console) -> list[WorkflowView]:
    nc = await connect(settings, "claimcheck-demo")
    subjects = Subjects(settings.prefix)
    try:
        started = []
        for complaint in COMPLAINTS:
            reply = await submit(
                nc,
                subjects,
                "triage_complaint",
                "triage",
                json.dumps(complaint).encode(),
                scope=f"complaint:{complaint['customer']}",
            )
            console.print(
                f"submitted {complaint['customer']}'s complaint as workflow {reply.workflow_id}"
            )
            started.append(reply.workflow_id)
        async with Progress(console, "workflows", len(started)) as progress:
            return list(
                await asyncio.gather(
                    *(progress.track(watch(nc, subjects, wf), settled_note) for wf in started)
                )
            )
    finally:
        await nc.close()


def settled_note(view: WorkflowView) -> str:
    """A line as each workflow settles: it says what happened before the full report."""
    how = {
        "escalated": "waits for a human",
        "completed": "completed",
        "running": "did not settle in time",
    }.get(view.status)
    return f"workflow {view.workflow_id} {how or f'{view.status}: {view.outcome}'}"


def show(console: Console, views: list[WorkflowView], emails: list[str]) -> None:
    for view in views:
        console.print(f"\n[bold]workflow {view.workflow_id}: {view.status}[/]")
        if view.status in ("failed", "stopped"):
            console.print(f"  {view.status}: {view.outcome}", markup=False, soft_wrap=True)
        for record in view.evidence:
            refs = " ".join(f"{key}={value}" for key, value in record.get("refs", {}).items())
            console.print(
                f"  evidence {record['auditId']}: {record['actor']} {record['action']} "
                f"{record['resource']} permission={record['permission']} "
                f"status={record['status']} {refs}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        for escalation in view.escalations:
            console.print(
                f"  escalated to a human ({escalation['kind']}): {escalation['reason']}\n"
                f"  run `claimcheck up --local-smtp` in this directory, and answer it with:\n"
                f"    claimcheck escalations approve {escalation['escalationId']} --as YOUR-NAME\n"
                f"    claimcheck escalations deny {escalation['escalationId']} --as YOUR-NAME",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        for name, data in view.checkpoints.items():
            backed = view.checkpoint_backing.get(name) or []
            console.print(
                f"  checkpoint {name} (declared) {data} "
                + (f"backed by {', '.join(backed)}" if backed else "[no evidence backs it]"),
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        for claim in view.claims:
            console.print(
                "\n".join(claim_lines(claim, checks=view.external_checks)),
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    console.print(f"\nSMTP server received {len(emails)} email(s):")
    for email in emails:
        console.print(f"  {email}", markup=False, highlight=False, soft_wrap=True)
