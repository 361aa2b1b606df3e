"""Verdicts where they are read: the claims read model and the demo's summary show each item's
verdict and reason beside what was claimed, and the agent's text marked as not checked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agents import ClaimItem, Context, RuntimeRefused, ScriptedModel
from bus.ledger.view_runner import ViewRunner, open_views, rebuild_views
from projections.claim_text import claim_lines
from projections.ledger_views import claims, dump
from projections.views import ViewStore
from tests.conftest import Bus, claimcheck, run_workflow, web_console
from tests.console.http import get

POLICY = """
[[rules]]
name = "tickets"
actor = "triage"
action = "create_ticket"
resource = "ticket:*"
effect = "allow"

[failures.permission_denied]   # the agent goes on after a refused email, to make its claim
strategy = "replan"
max_attempts = 10

[tasks.t]
done = [{action = "create_ticket"}, {action = "send_email"}]
"""


@pytest.fixture
async def live_views(bus: Bus) -> AsyncIterator[ViewStore]:
    views = open_views(bus.settings)
    runner = ViewRunner(bus.ledger, views, poll_interval=0.2)
    task = asyncio.create_task(runner.run())
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


async def mixed(ctx: Context) -> None:
    """One item true (the press email was denied), one false (the ticket was filed low)."""
    filed = await ctx.tools.create_ticket(customer="c", title="t", severity="low")
    try:
        await ctx.tools.send_email(to="press@pr.example", subject="s", body="b")
    except RuntimeRefused as refused:
        denied = next(f.message for f in refused.error.fields if f.field == "evidenceId")
    wrong = ClaimItem(
        action="create_ticket",
        target="ticket:c",
        status="succeeded",
        evidence_id=filed.evidence.audit_id,
        facts={"severity": "high"},
    )
    honest = ClaimItem(
        action="send_email",
        target="mailto:press@pr.example",
        status="denied",
        evidence_id=denied,
        facts={"recipient": "press@pr.example"},
    )
    await ctx.summarize("filed high; the press email was refused", evidence=[wrong, honest])


async def test_every_command_shows_the_verdict_beside_each_claimed_item(bus: Bus) -> None:
    """``claims``, ``claims --json``, ``status``, ``trace`` and ``escalations show``, each its
    own process reading the ledger: each item with its verdict and reason, never ``None``."""
    view = await run_workflow(bus, mixed, ScriptedModel([]))
    [claim] = view.claims
    assert claim["verdict"] == "contradicted" and claim["asserts"] is None
    env = bus.settings.as_environment()
    wrong = "contradicted create_ticket ticket:c succeeded (severity='high') per "
    honest = "verified     send_email mailto:press@pr.example denied"

    def shown(*args: str) -> str:
        result = claimcheck(*args, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    for output in (
        shown("claims"),
        shown("status", view.workflow_id),
        shown("trace", view.workflow_id),
    ):
        assert wrong in output and "severity is 'low'" in output, output
        assert honest in output and "asserts None" not in output, output
    [row] = json.loads(shown("claims", "--json"))
    assert [(i["verdict"], i["status"]) for i in row["items"]] == [
        ("contradicted", "succeeded"),
        ("verified", "denied"),
    ]
    assert "severity is 'low'" in row["items"][0]["reason"]
    [state] = json.loads(shown("status", view.workflow_id, "--json"))
    assert [i["verdict"] for i in state["claims"][0]["items"]] == ["contradicted", "verified"]
    [escalation] = view.escalations
    asked = json.loads(shown("escalations", "show", escalation["escalationId"]))
    assert [i["verdict"] for i in asked["claim"]["items"]] == ["contradicted", "verified"]
    async with web_console(bus.settings) as url:  # the console's workflow page
        page = (await get(f"{url}/workflows/{view.workflow_id}")).body
    assert '<span class="verdict contradicted">contradicted</span> create_ticket' in page
    assert "severity is &#39;low&#39;" in page and "None" not in page


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
