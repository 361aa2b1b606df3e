"""Verdicts where they are read: the claims read model and the demo's summary show each item's
verdict and reason beside what was claimed, and the agent's text marked as not checked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agents import ClaimItem, Context, ScriptedModel
from bus.ledger.view_runner import ViewRunner, open_views, rebuild_views
from bus.operations.demo import claim_lines
from projections.ledger_views import claims, dump
from projections.views import ViewStore
from tests.conftest import Bus, run_workflow

POLICY = """
[[rules]]
name = "tickets"
actor = "triage"
action = "create_ticket"
resource = "ticket:*"
effect = "allow"

[tasks.t]
done = [{action = "create_ticket"}, {action = "send_email"}]
"""


@pytest.fixture
async def live_views(bus: Bus) -> AsyncIterator[ViewStore]:
    views = open_views(bus.settings)
    runner = ViewRunner(bus.ledger, views, poll_interval=0.2)
    task = asyncio.create_task(runner.run(bus.nc, bus.subjects))
    yield views
    task.cancel()
    await runner.close()


async def overstates(ctx: Context) -> None:
    filed = await ctx.tools.create_ticket(customer="c", title="t", severity="low")
    said = ClaimItem(
        action="create_ticket",
        target="ticket:c",
        status="succeeded",
        evidence_id=filed.evidence.audit_id,
        facts={"severity": "critical"},
    )
    await ctx.summarize("filed it as critical and told everyone", evidence=[said])


async def under_done(ctx: Context) -> None:
    filed = await ctx.tools.create_ticket(customer="c", title="t", severity="low")
    await ctx.summarize("all done", evidence=[filed.evidence])


async def test_the_claims_view_shows_each_items_verdict_and_the_unchecked_remark(
    bus: Bus, live_views: ViewStore
) -> None:
    lied = await run_workflow(bus, overstates, ScriptedModel([]))
    partial = await run_workflow(bus, under_done, ScriptedModel([]))
    last = bus.ledger.recorder.max_notification_id()
    async with asyncio.timeout(10):
        while (live_views.max_tracking_id(bus.ledger.name) or 0) < last:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    rows = {row["workflow_id"]: row for row in claims(live_views, unverified_only=True)}
    contradicted = rows[lied.workflow_id]
    assert contradicted["verdict"] == "contradicted"
    [item] = contradicted["items"]
    assert (item["verdict"], item["facts"]) == ("contradicted", {"severity": "critical"})
    assert "severity is 'low'" in item["reason"]
    assert contradicted["remarks_unchecked"] == "filed it as critical and told everyone"
    assert "critical" in contradicted["statement"] and "told" not in contradicted["statement"]
    incomplete = rows[partial.workflow_id]
    assert incomplete["verdict"] == "partial"
    assert [i["verdict"] for i in incomplete["items"]] == ["verified"]
    assert incomplete["missing"] == ["send_email succeeded"]
    # A rebuild from the first event gives the same rows.
    before = dump(live_views)
    await asyncio.to_thread(rebuild_views, bus.settings, bus.ledger)
    after = dump(open_views(bus.settings))
    assert after["cc_claim_items"] == before["cc_claim_items"]
    assert after["cc_claim_notes"] == before["cc_claim_notes"]


def test_the_demo_summary_shows_verdicts_beside_what_was_claimed() -> None:
    claim: dict[str, Any] = {
        "agent": "notifier",
        "verdict": "partial",
        "reason": "not done: missing send_email succeeded",
        "items": [
            {
                "action": "create_ticket",
                "target": "ticket:c",
                "status": "succeeded",
                "evidenceId": "ev-1",
                "facts": {"severity": "low"},
                "verdict": "verified",
                "reason": "matches ev-1",
            }
        ],
        "missing": ["send_email succeeded"],
        "remarks": "emailed the team",
    }
    lines = claim_lines(claim)
    assert lines[0] == "  claim by notifier -> partial: not done: missing send_email succeeded"
    assert "verified     create_ticket ticket:c succeeded (severity='low') per ev-1" in lines[1]
    assert lines[2:] == [
        "    missing for done: send_email succeeded",
        "    remark (not checked): 'emailed the team'",
    ]
