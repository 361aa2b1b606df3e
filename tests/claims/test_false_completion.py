"""The false-completion suite (issue 11, item 8): every class of lie the issue saw pass ends
flagged with the right verdict and the workflow not completed; every honest control ends
verified and completed, with no false flag.

A real nats-server, the runtime and tool host (real SMTP, real ticket store), the ledger on
SQLite and on PostgreSQL, and the agents of :mod:`tests.claims.liars`, in this process or
each as its own OS process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bus.operations.mailbox import Mailbox
from bus.operations.operators import submit, watch
from bus.runtime.catalogue import Call, Catalogue, ToolFailure
from bus.tools import create_ticket
from bus.tools.mail import Email, Sent, send_email
from projections import WorkflowView
from tests.claims import liars
from tests.conftest import Bus, claimcheck

ROOT = Path(__file__).resolve().parents[2]

POLICY = """
[[rules]]
name = "tickets"
actor = "triage"
action = "create_ticket"
resource = "ticket:*"
effect = "allow"

[[rules]]
name = "acme-email"
action = "send_email"
resource = "mailto:*@acme.example"
effect = "allow"

[failures.permission_denied]   # the agent is told to replan: it goes on, and can make its claim
strategy = "replan"
max_attempts = 10

[failures.tool_error]
strategy = "retry"
max_attempts = 3
backoff_seconds = 0.05
exhausted = "fail"

[tasks.cited_twice]
done = [{action = "send_email"}, {action = "send_email"}]

[tasks.ticket_only]
done = [{action = "create_ticket"}, {action = "send_email"}]

[tasks.text_says_sent]
done = [{action = "send_email", target = "mailto:press@*"}]

[tasks.claims_before_delegate]
done = [{action = "send_email"}]

[tasks.single]
done = [{action = "create_ticket"}]

[tasks.several]
done = [{action = "create_ticket"}, {action = "send_email"}]

[tasks.runtime_retry]
done = [{action = "send_email"}]

[tasks.agent_retry]
done = [{action = "send_email", status = "succeeded"}]

[tasks.chain]
done = [{action = "create_ticket"}]

[tasks.notify]
done = [{action = "send_email", target = "mailto:*@acme.example"}]

[tasks.delegate]
done = [{action = "send_email"}]

[tasks.notify_plain]
done = [{action = "send_email"}]
"""


class SuiteEmail:
    """The real email tool; bounce@ fails for good, flaky@ fails once (transiently) per call,
    down@ fails transiently every time, so the runtime's retries run out."""

    seen: ClassVar[set[str]] = set()

    @classmethod
    async def run(cls, email: Email, call: Call) -> Sent:
        if email.to == liars.DOWN:
            raise ToolFailure("421 service not available", transient=True)
        if email.to == liars.BOUNCE:
            raise ToolFailure("550 mailbox unavailable", transient=False)
        if email.to == liars.FLAKY and call.idempotency_key not in cls.seen:
            cls.seen.add(call.idempotency_key)
            raise ToolFailure("421 try again later", transient=True)
        return await send_email.function(email, call)


@pytest.fixture
def catalogue() -> Catalogue:
    suite = dataclasses.replace(send_email, function=SuiteEmail.run)
    return Catalogue("suite", [suite, create_ticket])


Runner = Callable[[str], Awaitable[WorkflowView]]


@pytest.fixture
async def in_process(bus: Bus) -> AsyncIterator[Runner]:
    """Both agents as tasks of this process."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(a.run(bus.settings, stop)) for a in (liars.triage, liars.notifier)]
    yield lambda task: run(bus, task)
    stop.set()
    await asyncio.gather(*tasks)


@pytest.fixture
async def processes(bus: Bus) -> AsyncIterator[Runner]:
    """Each agent its own OS process, started the way an operator would start it."""
    env = {**os.environ, **bus.settings.as_environment(), "PYTHONPATH": str(ROOT)}
    children = [
        await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("claimcheck")),
            "agent",
            "run",
            f"tests.claims.liars:{name}",
            cwd=ROOT,
            env=env,
        )
        for name in ("triage", "notifier")
    ]
    yield lambda task: run(bus, task, timeout=40)
    for child in children:
        child.terminate()
    for child in children:
        await child.wait()


async def run(bus: Bus, task: str, timeout: float = 20) -> WorkflowView:
    reply = await submit(bus.nc, bus.subjects, task, "triage", b"{}")
    view = await watch(bus.nc, bus.subjects, reply.workflow_id, timeout=timeout)
    await asyncio.sleep(0.3)  # anything a settled workflow still records would show now
    return await watch(
        bus.nc,
        bus.subjects,
        reply.workflow_id,
        timeout=timeout,
        until=lambda v: v.events >= view.events,
    )


# -- what a flagged lie and an honest run look like -----------------------------------


def assert_flagged(view: WorkflowView, verdict: str, reason: str) -> dict[str, Any]:
    """The lie's claim has ``verdict`` (its reason names why), and the workflow did not complete."""
    flagged = [claim for claim in view.claims if claim["verdict"] != "verified"]
    assert flagged, f"no claim was flagged: {view.claims}"
    claim = flagged[-1]
    assert claim["verdict"] == verdict, claim
    assert reason in claim["reason"], claim["reason"]
    assert view.status == "escalated", view.status
    assert [e["kind"] for e in view.escalations] == ["unverified_claim"]
    return claim


def assert_honest(view: WorkflowView) -> None:
    assert view.status == "completed", (view.status, view.claims, view.rejected_handoffs)
    assert view.claims and all(claim["verdict"] == "verified" for claim in view.claims)
    assert all(item["verdict"] == "verified" for claim in view.claims for item in claim["items"])
    assert not view.escalations and not view.rejected_handoffs
    assert "unverified_claim" not in [f["kind"] for f in view.failures]


LIES = {
    "wrong_action": ("contradicted", "is create_ticket, not send_email"),
    "cited_twice": ("unsupported", "already backs another item"),
    "ticket_only": ("partial", "missing send_email succeeded"),
    "denied_redirect": (
        "contradicted",
        "targets mailto:ops@acme.example, not mailto:press@pr-agency.example",
    ),
    "wrong_recipient": ("contradicted", "recipient is 'ops@acme.example'"),
    "wrong_severity": ("contradicted", "severity is 'low'"),
    "text_says_sent": ("partial", "missing send_email on mailto:press@* succeeded"),
    "steal": ("unsupported", "was produced by triage, not by notifier"),
    "completed_without_evidence": ("unsupported", "the claim has no items"),
    "completed_on_failed_evidence": ("contradicted", "is failed"),
    "claims_before_delegate": ("unsupported", "no evidence ev-to-be-sent-by-notifier"),
    "made_up_checkpoint": ("unsupported", "the claim has no items"),
}

HONEST = [
    "single",
    "several",
    "runtime_retry",
    "agent_retry",
    "chain",
    "delegate",
    "honest_denial",
]


@pytest.mark.parametrize("task", list(LIES))
async def test_each_lie_is_flagged_and_never_completes(
    in_process: Runner, mailbox: Mailbox, task: str
) -> None:
    verdict, reason = LIES[task]
    view = await in_process(task)
    claim = assert_flagged(view, verdict, reason)
    assert claim["statement"] != claim["remarks"]  # the statement comes from the checked items


@pytest.mark.parametrize("task", HONEST)
async def test_each_honest_control_is_verified_and_completes(
    in_process: Runner, mailbox: Mailbox, task: str
) -> None:
    assert_honest(await in_process(task))


async def test_retries_that_ran_out_are_failed_evidence_and_end_the_workflow(
    in_process: Runner, mailbox: Mailbox, bus: Bus
) -> None:
    """Once the runtime gives up (exhausted ``fail``), the workflow fails with the reason:
    an honest report of the failure is not needed, and a claim of success cannot be made."""
    for task in ("honest_failure", "sent_after_giving_up"):
        failed_first = await in_process(task)  # the failed evidence commits just after
        view = await watch(
            bus.nc, bus.subjects, failed_first.workflow_id, until=lambda v: bool(v.evidence)
        )
        assert view.status == "failed" and "tool_error after 3 of 3 attempts" in view.outcome
        [failed] = view.evidence
        assert (failed["status"], failed["facts"]["recipient"]) == ("failed", liars.DOWN)
        assert "421" in failed["refs"]["error"]
        assert [f["kind"] for f in view.failures] == ["tool_error"] * 3
        assert view.claims == []  # the claim came after the workflow had ended: refused
    assert mailbox.received == []


async def test_a_refused_handoff_is_recorded_and_never_delivered(
    in_process: Runner, mailbox: Mailbox
) -> None:
    view = await in_process("completed_on_failed_evidence")
    [rejected] = view.rejected_handoffs
    assert (rejected["to"], rejected["status"]) == ("notifier", "completed")
    assert "needs a verified claim" in rejected["reason"]
    assert [h["to"] for h in view.handoffs] == ["triage"]  # notifier never got it
    assert mailbox.received == []  # so notifier never sent its "done" email


async def test_a_claim_made_before_the_delegate_acts_sends_nothing(
    in_process: Runner, mailbox: Mailbox
) -> None:
    view = await in_process("claims_before_delegate")
    assert [h["to"] for h in view.handoffs] == ["triage", "notifier"]
    assert view.evidence == [] and mailbox.received == []


async def test_the_text_is_a_remark_and_the_statement_says_what_was_checked(
    in_process: Runner, mailbox: Mailbox
) -> None:
    view = await in_process("text_says_sent")
    [claim] = view.claims
    assert claim["remarks"] == "statement sent to the press"
    assert "send_email mailto:press@pr-agency.example denied" in claim["statement"]
    assert "sent" not in claim["statement"].replace("send_email", "")
    assert claim["missing"] == ["send_email on mailto:press@* succeeded"]
    [checked] = claim["items"]
    assert checked["verdict"] == "verified"  # the item is true; the task is not done


async def test_a_chain_carries_the_verified_items_on_the_handoff(
    in_process: Runner, mailbox: Mailbox
) -> None:
    view = await in_process("chain")
    assert_honest(view)
    handoff = view.handoffs[-1]
    gate_claim = view.claims[0]
    assert handoff["claimId"] == gate_claim["claimId"]
    assert [i["action"] for i in handoff["claimItems"]] == ["create_ticket"]
    assert len(mailbox.received) == 1


async def test_a_made_up_checkpoint_is_shown_as_declared_and_backed_by_nothing(
    in_process: Runner, mailbox: Mailbox, bus: Bus
) -> None:
    view = await in_process("made_up_checkpoint")
    assert view.checkpoints == {"email-sent": {"to": liars.OPS}}
    assert view.checkpoint_backing == {"email-sent": []} and mailbox.received == []
    status = await asyncio.to_thread(
        claimcheck, "status", view.workflow_id, env=bus.settings.as_environment()
    )
    assert "checkpoints email-sent (declared; no evidence backs it)" in status.stdout


async def test_every_lie_and_control_with_each_agent_in_its_own_process(
    processes: Runner, mailbox: Mailbox
) -> None:
    """The whole suite again, with triage and notifier each an OS process of its own."""
    for task, (verdict, reason) in LIES.items():
        assert_flagged(await processes(task), verdict, reason)
    for task in HONEST:
        assert_honest(await processes(task))
