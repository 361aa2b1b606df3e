"""What a human's approval of a flagged claim leads to (issue 11): it vouches for that claim
only. A handoff refused for the claim goes on, once, and the workflow settles; a final claim
approved while other work is still open does not complete the workflow.

The same real parts as the false-completion suite (:mod:`tests.claims.test_false_completion`).
"""

from __future__ import annotations

import asyncio

from bus.operations.mailbox import Mailbox
from bus.operations.operators import resolve, watch
from bus.runtime.policy import Policy
from projections import WorkflowView
from tests.claims import test_false_completion as suite
from tests.claims.test_false_completion import Runner
from tests.conftest import Bus

POLICY = suite.POLICY
in_process = suite.in_process  # the suite's fixtures: its agents, tools and policy
catalogue = suite.catalogue

CLOSED = ("completed", "failed", "stopped")


async def approve_the_flagged_claim(bus: Bus, view: WorkflowView) -> str:
    [escalation] = view.escalations
    assert escalation["kind"] == "unverified_claim" and escalation["claimId"]
    answer = await resolve(bus.nc, bus.subjects, escalation["escalationId"], "approve", "dana")
    return answer["workflowStatus"]


def event_types(bus: Bus, workflow_id: str) -> list[str]:
    return [event.type for event in bus.ledger.history(workflow_id)]


async def test_approving_a_refused_handoff_sends_it_once_and_the_workflow_settles(
    in_process: Runner, mailbox: Mailbox, bus: Bus
) -> None:
    view = await in_process("completed_without_evidence")
    [refused] = view.rejected_handoffs
    await approve_the_flagged_claim(bus, view)
    done = await watch(bus.nc, bus.subjects, view.workflow_id, until=lambda v: v.status in CLOSED)
    assert done.status == "completed", (done.status, done.outcome)
    assert [h["handoffId"] for h in done.handoffs][1:] == [refused["handoffId"]]
    assert len(mailbox.received) == 1  # notifier got the work, once, and did it
    await asyncio.sleep(1.5)  # a redelivery loop would show now
    types = event_types(bus, view.workflow_id)
    assert "HandoffDeadLettered" not in types and "WorkflowResumed" not in types
    assert types.count("HandoffSent") == 2 and len(mailbox.received) == 1


async def test_approving_a_final_claim_does_not_complete_with_a_handoff_open(
    in_process: Runner, mailbox: Mailbox, bus: Bus, policy: Policy
) -> None:
    """triage hands the email to notifier and claims it sent; a human approves the claim.
    notifier's handling is still open (it never sends), so the workflow may not complete."""
    view = await in_process("claims_before_delegate")
    assert await approve_the_flagged_claim(bus, view) == "running"
    await asyncio.sleep(1.0)
    workflow = bus.ledger.workflow(view.workflow_id)
    assert workflow.status == "running"
    assert "WorkflowCompleted" not in event_types(bus, view.workflow_id)
    notifier_handoff = [h["handoffId"] for h in view.handoffs if h["to"] == "notifier"]
    assert workflow.open_handlings(policy.done()) == notifier_handoff
