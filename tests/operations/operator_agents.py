"""An agent for the operator-control and fault tests, run as its own OS process by the stack.

``CLAIMCHECK_TEST_GATES`` names a directory: reaching point ``name`` writes
``<dir>/<name>.reached`` and waits while ``<dir>/<name>.hold`` exists; the ``crash``
task raises while ``<dir>/crash`` exists.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from agents import Agent, Context, ScriptedModel
from tests.failures.fault_agents import gate


class Order(BaseModel):
    customer: str
    item: str


worker = Agent("worker", model=ScriptedModel([]))
"""Its inbox (made by the runtime) redelivers after 2 s and dead-letters after 2 deliveries,
so a handler that keeps failing is dead-lettered in seconds: see the stack's settings."""


@worker.task("order")
async def order(ctx: Context) -> None:
    """Files a ticket for a valid order; its input must be JSON and an Order."""
    placed = Order.model_validate(ctx.artifact_json())
    ticket = await ctx.tools.create_ticket(
        customer=placed.customer, title=placed.item, severity="low"
    )
    await ctx.checkpoint("filed", {"ticket": ticket.output}, [ticket.evidence])
    await gate("after-ticket")
    sent = await ctx.tools.send_email(
        to="ops@acme.example", subject=f"order {placed.item}", body="new order"
    )
    await ctx.summarize("filed and told ops", evidence=[ticket.evidence, sent.evidence])


@worker.task("crash")
async def crash(ctx: Context) -> None:
    """Raises while the crash flag exists; otherwise emails ops and is done."""
    if (Path(os.environ["CLAIMCHECK_TEST_GATES"]) / "crash").exists():
        raise RuntimeError("the handler broke: flag is set")
    sent = await ctx.tools.send_email(to="ops@acme.example", subject="fine", body="ok")
    await ctx.summarize("emailed ops", evidence=[sent.evidence])


@worker.task("ask")
async def ask(ctx: Context) -> None:
    """Waits for an operator's ``recipient`` signal, then emails whom it names."""
    signal = await ctx.wait_for_signal("recipient")
    sent = await ctx.tools.send_email(to=signal["to"], subject="as you asked", body="hello")
    await ctx.summarize("emailed as signalled", evidence=[sent.evidence])


@worker.task("press")
async def press(ctx: Context) -> None:
    """Emails an address no rule allows: the runtime escalates, and a human decides."""
    sent = await ctx.tools.send_email(to="press@pr-agency.example", subject="statement", body="…")
    await ctx.summarize("emailed", evidence=[sent.evidence])
