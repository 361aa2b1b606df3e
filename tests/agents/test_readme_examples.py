"""Every SDK example in the README runs, as written there, against the runtime on a real
nats-server and ledger: a tool call, a checkpoint, a claim, a handoff with an artifact, a
human approval and a budget. An example that no longer works fails here, not for a user."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agents import Agent
from bus.operations.mailbox import Mailbox
from bus.operations.operators import resolve, submit, watch
from projections import WorkflowView
from tests.conftest import Bus

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE = re.compile(r"<!-- sdk-example: (\w+) -->\n```python\n(.*?)```", re.DOTALL)
COMPLAINT = {"customer": "contoso", "text": "My order arrived broken"}


def examples() -> dict[str, str]:
    return dict(EXAMPLE.findall(README.read_text()))


def agents_of(code: str) -> list[Agent]:
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    return [value for value in namespace.values() if isinstance(value, Agent)]


@dataclass
class Run:
    task: str
    to: str = "triage"
    budget: float | None = None
    approve: bool = False
    expect: Callable[[WorkflowView, Mailbox, Bus], None] = lambda view, mailbox, bus: None
    status: str = "completed"


def claimed(view: WorkflowView) -> list[str]:
    return [claim["verdict"] for claim in view.claims]


def ticket_filed(view: WorkflowView, mailbox: Mailbox, bus: Bus) -> None:
    assert [e["action"] for e in view.evidence] == ["create_ticket"]
    assert claimed(view) == ["verified"]


def checkpoint_backed(view: WorkflowView, mailbox: Mailbox, bus: Bus) -> None:
    ticket_filed(view, mailbox, bus)
    assert list(view.checkpoints) == ["ticket-filed"]
    [reached] = [
        e.data for e in bus.ledger.history(view.workflow_id) if e.type == "CheckpointReached"
    ]
    assert reached["backed_by"] == [view.evidence[0]["auditId"]]


def facts_verified(view: WorkflowView, mailbox: Mailbox, bus: Bus) -> None:
    [claim] = view.claims
    [item] = claim["items"]
    assert (claim["verdict"], item["verdict"]) == ("verified", "verified")
    assert item["facts"]["severity"] == "medium"


def handed_off_and_emailed(view: WorkflowView, mailbox: Mailbox, bus: Bus) -> None:
    assert [h["to"] for h in view.handoffs] == ["triage", "notifier"]
    assert [m["To"] for m in mailbox.received] == ["support-leads@acme.example"]
    assert "contoso" in mailbox.received[0]["Subject"]


def approved_email(view: WorkflowView, mailbox: Mailbox, bus: Bus) -> None:
    assert [m["To"] for m in mailbox.received] == ["press@pr-agency.example"]
    assert [(e["permission"], e["rule"]) for e in view.evidence] == [
        ("denied", "default-deny"),  # not run: the workflow escalated
        ("approved", "human:dana"),  # run once, with the human's grant
    ]
    assert claimed(view) == ["verified"]


def stopped_by_budget(view: WorkflowView, mailbox: Mailbox, bus: Bus) -> None:
    cost = bus.ledger.workflow(view.workflow_id).cost_usd
    assert cost == pytest.approx(2 * (0.1 * 3.0 + 0.01 * 15.0))  # priced as Sonnet
    assert "budget" in view.outcome


RUNS = {
    "tool_call": Run("file_ticket", expect=ticket_filed),
    "checkpoint": Run("file_ticket", expect=checkpoint_backed),
    "claim": Run("file_ticket", expect=facts_verified),
    "handoff": Run("file_ticket", expect=handed_off_and_emailed),
    "approval": Run("tell_press", to="notifier", approve=True, expect=approved_email),
    "budget": Run("plan", budget=0.5, status="stopped", expect=stopped_by_budget),
}


def test_the_readme_shows_one_example_per_capability() -> None:
    assert sorted(examples()) == sorted(RUNS)


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("name", sorted(RUNS))
async def test_the_readme_example_runs(bus: Bus, mailbox: Mailbox, name: str) -> None:
    run = RUNS[name]
    stop = asyncio.Event()
    runners = [
        asyncio.create_task(agent.run(bus.settings, stop)) for agent in agents_of(examples()[name])
    ]
    try:
        reply = await submit(
            bus.nc,
            bus.subjects,
            run.task,
            run.to,
            json.dumps(COMPLAINT).encode(),
            budget_usd=run.budget,
        )
        view = await watch(bus.nc, bus.subjects, reply.workflow_id, timeout=30)
        if run.approve:
            assert view.status == "escalated" and mailbox.received == []
            [escalation] = view.escalations
            await resolve(bus.nc, bus.subjects, escalation["escalationId"], "approve", "dana")
            view = await watch(
                bus.nc, bus.subjects, reply.workflow_id, 30, until=lambda v: v.status == run.status
            )
    finally:
        stop.set()
        await asyncio.gather(*runners)
    assert view.status == run.status, view.outcome
    run.expect(view, mailbox, bus)
