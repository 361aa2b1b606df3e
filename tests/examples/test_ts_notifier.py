"""An agent in another language: the TypeScript notifier (examples/ts-notifier, nats.js and
Ajv over the exported schemas) plays its part of the demo's workflow beside the Python
triage agent on a real stack, through both the routine path and a human's approval, and
its claims end verified.

Skipped only when ``node`` is missing (.ci/run installs it); npm ci and the build run here.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bus.operations.mailbox import Mailbox
from bus.operations.operators import resolve, submit, watch
from bus.operations.stack import Stack
from bus.settings import Settings
from bus.transport.connection import connect
from bus.transport.subjects import Subjects
from projections import WorkflowView
from tests.conftest import claimcheck

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ts-notifier"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


@pytest.fixture(scope="module")
def built() -> Path:
    """The example installed from its lock file and compiled, as a user would."""
    if not (EXAMPLE / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=EXAMPLE, check=True)
    subprocess.run(["npm", "run", "build"], cwd=EXAMPLE, check=True, capture_output=True)
    return EXAMPLE / "dist" / "notifier.js"


@pytest.fixture
async def stack_with_ts_notifier(
    tmp_path: Path, mailbox: Mailbox, built: Path
) -> AsyncIterator[Settings]:
    """The Python stack with the triage agent; the notifier is the TypeScript process."""
    settings = Settings(state_dir=tmp_path / "state", smtp_port=mailbox.port)
    async with Stack(
        settings, agents=("agents.complaints:triage",), extra_roles=("agent-notifier",)
    ) as stack:
        log = (settings.state_dir / "logs" / "ts-notifier.log").open("wb")
        node = await asyncio.create_subprocess_exec(
            "node",
            str(built),
            stdout=log,
            stderr=log,
            env={
                **os.environ,
                "CLAIMCHECK_NATS_URL": settings.nats_url,
                "CLAIMCHECK_CREDENTIALS": str(stack.credentials["agent-notifier"]),
            },
        )
        try:
            yield settings
        finally:
            node.terminate()
            await node.wait()
            log.close()


async def run(settings: Settings, complaint: dict, approve: bool = False) -> WorkflowView:
    nc = await connect(settings, "ts-test")
    subjects = Subjects(settings.prefix)
    try:
        started = await submit(
            nc, subjects, "triage_complaint", "triage", json.dumps(complaint).encode()
        )
        view = await watch(nc, subjects, started.workflow_id, timeout=60)
        if approve:
            assert view.status == "escalated", logs(settings)
            [escalation] = view.escalations
            await resolve(nc, subjects, escalation["escalationId"], "approve", "dana")
            view = await watch(
                nc, subjects, started.workflow_id, 60, until=lambda v: v.status == "completed"
            )
        return view
    finally:
        await nc.close()


def logs(settings: Settings) -> str:
    return (settings.state_dir / "logs" / "ts-notifier.log").read_text()[-3000:]


def notifier_claims(view: WorkflowView) -> list[dict]:
    return [claim for claim in view.claims if claim["agent"] == "notifier"]


async def test_the_typescript_notifier_sends_the_escalation_and_its_claim_verifies(
    stack_with_ts_notifier: Settings, mailbox: Mailbox
) -> None:
    settings = stack_with_ts_notifier
    view = await run(settings, {"customer": "contoso", "text": "I want a refund now"})
    assert view.status == "completed", f"{view.outcome}\n{logs(settings)}"
    [claim] = notifier_claims(view)
    assert claim["verdict"] == "verified"
    [item] = claim["items"]
    assert (item["action"], item["target"]) == ("send_email", "mailto:support-leads@acme.example")
    assert [m["To"] for m in mailbox.received] == ["support-leads@acme.example"]
    assert "[high] complaint from contoso" in mailbox.received[0]["Subject"]
    assert "(TypeScript) consuming cc.handoff.notifier" in logs(settings)

    # The escalation path: the press is outside the policy, a human approves, the TypeScript
    # agent is handed the work again and replays its recorded steps to a verified claim.
    pressed = await run(
        settings, {"customer": "fabrikam", "text": "a journalist asks about the leak"}, True
    )
    assert pressed.status == "completed", logs(settings)
    assert [c["verdict"] for c in notifier_claims(pressed)] == ["verified"]
    assert [m["To"] for m in mailbox.received] == [
        "support-leads@acme.example",
        "press@pr-agency.example",
    ]
    verified = await asyncio.to_thread(claimcheck, "verify", state_dir=settings.state_dir)
    assert verified.returncode == 0, verified.stdout + verified.stderr
