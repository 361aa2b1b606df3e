"""The Temporal side of the comparison: a workflow of K activities, each a ticket insert.

Imported only when ``temporalio`` is installed (the ``bench`` extra).
"""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

from temporalio import activity, workflow

from bus.runtime.catalogue import Call
from bus.settings import Settings
from bus.tools.tickets import Ticket, create_ticket


class Tickets:
    """The activity: the same insert claimcheck's ``create_ticket`` tool makes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="create_ticket")
    async def create_ticket(self, step: int) -> str:
        ticket = Ticket(customer=f"bench-{step}", title="step", severity="low")
        call = Call(uuid4().hex, workflow_id="bench", actor="bench", settings=self.settings)
        return (await create_ticket(ticket, call)).ticket_id


@workflow.defn(name="BenchWorkflow", sandboxed=False)
class BenchWorkflow:
    @workflow.run
    async def run(self, steps: int) -> int:
        for step in range(steps):
            await workflow.execute_activity(
                "create_ticket", step, start_to_close_timeout=timedelta(seconds=30)
            )
        return steps
