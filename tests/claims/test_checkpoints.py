"""Checkpoints are shown as what the agent declared, beside the evidence that backs them, or a
mark that none does (issue 11, item 5): a made-up "email-sent" no longer looks like a real one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agents import Context, ScriptedModel
from bus.ledger.view_runner import ViewRunner, open_views
from projections.ledger_views import workflow_states
from projections.trace import timeline
from projections.views import ViewStore
from tests.conftest import Bus, run_workflow

POLICY = """
[[rules]]
name = "acme-email"
actor = "triage"
action = "send_email"
resource = "mailto:*@acme.example"
effect = "allow"

[[rules]]
name = "tickets"
actor = "triage"
action = "create_ticket"
resource = "ticket:*"
effect = "allow"
"""


@pytest.fixture
async def live_views(bus: Bus) -> AsyncIterator[ViewStore]:
    views = open_views(bus.settings)
    runner = ViewRunner(bus.ledger, views, poll_interval=0.2)
    task = asyncio.create_task(runner.run())
    yield views
    task.cancel()
    await runner.close()


async def declares(ctx: Context) -> None:
    filed = await ctx.tools.create_ticket(customer="c", title="t", severity="low")
    sent = await ctx.tools.send_email(to="ops@acme.example", subject="s", body="b")
    await ctx.checkpoint("email-sent", {"to": "ops"}, evidence=[sent.evidence])
    await ctx.checkpoint("press-told", {"to": "press"})  # made up: nothing was sent to the press
    await ctx.checkpoint("legal-told", {"to": "legal"}, evidence=[filed.evidence])
    await ctx.summarize("done", evidence=[filed.evidence, sent.evidence])


async def test_checkpoints_show_their_backing_or_its_absence(
    bus: Bus, live_views: ViewStore, mailbox: Any
) -> None:
    view = await run_workflow(bus, declares, ScriptedModel([]))
    assert view.status == "completed"
    ticket_id, email_id = (e["auditId"] for e in view.evidence)
    # Declared data is kept as declared; only real evidence backs it.
    assert view.checkpoints["press-told"] == {"to": "press"}
    # A ticket's evidence is real but the agent cited it: it backs what the agent said.
    assert view.checkpoint_backing == {
        "email-sent": [email_id],
        "press-told": [],
        "legal-told": [ticket_id],
    }
    last = bus.ledger.recorder.max_notification_id()
    async with asyncio.timeout(10):
        while (live_views.max_tracking_id(bus.ledger.name) or 0) < last:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    [state] = workflow_states(live_views, view.workflow_id)
    assert state["checkpoints"]["press-told"] == {"to": "press"}
    assert state["checkpoint_evidence"]["press-told"] == []
    assert state["checkpoint_evidence"]["email-sent"] == [email_id]
    lines = [
        line for line in timeline(bus.ledger.history(view.workflow_id)) if "press-told" in line
    ]
    assert lines and "no evidence backs it" in lines[0]


async def test_a_checkpoint_cannot_borrow_evidence_it_has_no_claim_to(
    bus: Bus, mailbox: Any
) -> None:
    """Evidence of another workflow, however real, backs nothing here."""
    first = await run_workflow(bus, declares, ScriptedModel([]))
    borrowed = first.evidence[1]

    async def borrows(ctx: Context) -> None:
        from handoff_schemas import Evidence, convert

        await ctx.checkpoint("email-sent", {}, evidence=[convert(borrowed, Evidence)])
        await ctx.summarize("done")

    view = await run_workflow(bus, borrows, ScriptedModel([]))
    assert view.checkpoint_backing == {"email-sent": []}
