"""The console against the demo on a real stack: every page as JSON, replay as the CLI does it,
approvals that need the token and a same-site form, live updates from the events stream, and
the ledger served read-only (a broken chain shouted) once the stack is down."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

from bus.operations.demo import run_complaints
from bus.operations.mailbox import Mailbox
from bus.operations.stack import Stack
from bus.settings import Settings
from tests.conftest import CLI, CONSOLE_TOKEN, claimcheck, web_console
from tests.console.http import get, live_updates, post_form, post_json
from tests.ledger.test_verification import tamper

BEARER = {"Authorization": f"Bearer {CONSOLE_TOKEN}"}


async def test_pages_as_json_replay_and_a_guarded_approval_seen_live(
    demo_stack: tuple[Settings, list],
) -> None:
    settings, views = demo_stack
    press = views[2].workflow_id
    async with web_console(settings) as url:
        listed = (await get(f"{url}/api/workflows")).json()
        assert listed["total"] == 3 and listed["stackUp"] is True
        row = next(w for w in listed["workflows"] if w["workflow_id"] == press)
        assert (row["status"], row["scope"], row["agent"]) == (
            "escalated",
            "complaint:fabrikam",
            "notifier",
        )
        assert (row["denied_actions"], row["open_escalations"]) == (1, 1)
        escalated = (await get(f"{url}/api/workflows?status=escalated&verdict=denied")).json()
        assert [w["workflow_id"] for w in escalated["workflows"]] == [press]
        assert (await get(f"{url}/api/workflows?search={press[:8]}")).json()["total"] == 1
        assert (await get(f"{url}/api/workflows?verdict=bogus")).status == 400

        page = (await get(f"{url}/api/workflows/{press}")).json()
        assert page["chain"] == {"intact": True, "firstBreak": None, "records": 2}
        denied = [e for e in page["evidence"] if e["action"] == "send_email"]
        assert [(e["status"], e["chainPosition"]) for e in denied] == [("denied", 2)]
        (escalation,) = page["escalations"]
        assert escalation["action"]["tool"] == "send_email" and escalation["resolution"] is None
        assert [(h["from"], h["to"]) for h in page["handoffs"]] == [
            ("cli", "triage"),
            ("triage", "notifier"),
        ]
        artifact = (await get(f"{url}/api/artifacts/{page['handoffs'][0]['artifactId']}")).json()
        assert artifact["json"]["customer"] == "fabrikam"
        kinds = {e["kind"] for e in page["events"]}
        assert {"believed", "decided", "executed", "evidence", "handoff", "escalation"} <= kinds

        replayed = (await get(f"{url}/api/workflows/{press}/replay?until=12")).json()
        cli = claimcheck("replay", press, "--until", "12", state_dir=settings.state_dir)
        assert cli.returncode == 0, cli.stderr
        assert replayed == {"until": 12, "state": json.loads(cli.stdout)}
        assert (await get(f"{url}/api/workflows/{press}/replay?until=999")).status == 400
        spec = (await get(f"{url}/openapi.json")).json()
        assert {"/api/workflows", "/api/workflows/{workflow_id}/replay"} <= set(spec["paths"])

        (waiting,) = (await get(f"{url}/api/escalations")).json()["escalations"]
        assert (waiting["workflow_id"], waiting["action"]["tool"]) == (press, "send_email")
        assert "held back: <b>send_email</b>" in (await get(f"{url}/escalations")).body

        answer = f"{url}/api/escalations/{escalation['escalationId']}/approve"
        assert (await post_json(answer, {"approver": "mallory"})).status == 401
        wrong = {"Authorization": "Bearer guessed"}
        assert (await post_json(answer, {"approver": "mallory"}, wrong)).status == 401

        await forms_refused_without_csrf_token_or_same_origin(url, escalation["escalationId"])

        updates: list[dict[str, Any]] = []
        listening = asyncio.create_task(
            live_updates(f"{url}/api/live", updates, lambda u: u.get("type") == "WorkflowCompleted")
        )
        await asyncio.sleep(0.3)
        approved = await post_json(answer, {"approver": "dana", "reason": "press ok"}, BEARER)
        assert approved.status == 200, approved.body
        await asyncio.wait_for(listening, 20)
        assert {u["workflowId"] for u in updates if u.get("workflowId")} == {press}

        page = (await get(f"{url}/api/workflows/{press}")).json()
        (escalation,) = page["escalations"]
        assert escalation["resolution"]["approver"] == "dana"
        sent = [e for e in page["evidence"] if e["action"] == "send_email"]
        assert [e["status"] for e in sent] == ["denied", "succeeded"]
        assert page["chain"]["intact"] and page["state"]["status"] == "completed"
        assert (await get(f"{url}/api/escalations")).json()["escalations"] == []
        again = await post_json(answer, {"approver": "erin"}, BEARER)
        assert again.status == 409 and "already resolved" in again.json()["detail"]


async def forms_refused_without_csrf_token_or_same_origin(url: str, escalation_id: str) -> None:
    first = await get(f"{url}/")
    cookie = first.headers["set-cookie"].split(";")[0]  # cc_csrf=...
    csrf = cookie.split("=", 1)[1]
    action = f"{url}/escalations/{escalation_id}/approve"
    no_csrf = await post_form(action, {"reason": "x"}, {"Cookie": cookie})
    assert no_csrf.status == 403
    signed_out = await post_form(action, {"csrf": csrf}, {"Cookie": cookie})
    assert signed_out.status == 401
    signed_in = f"{cookie}; cc_token={CONSOLE_TOKEN}; cc_operator=dana"
    foreign = {"Cookie": signed_in, "Origin": "http://evil.example"}
    assert (await post_form(action, {"csrf": csrf}, foreign)).status == 403
    bad_login = await post_form(
        f"{url}/login", {"csrf": csrf, "name": "x", "token": "guess"}, {"Cookie": cookie}
    )
    assert bad_login.status == 303 and "cc_token" not in bad_login.headers.get("set-cookie", "")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_with_the_stack_down_claimcheck_ui_serves_the_ledger_read_only(
    tmp_path: Path, mailbox: Mailbox
) -> None:
    settings = Settings(state_dir=tmp_path / "state", smtp_port=mailbox.port)
    async with Stack(settings):
        views = await run_complaints(settings, _Quiet())
    completed, press = views[0].workflow_id, views[2].workflow_id
    tamper(settings.ledger_url(), completed, next_evidence_version(settings, completed), forge)

    port = free_port()
    ui = start_ui(settings.state_dir, port)
    try:
        assert ui.stdout is not None
        said = [await asyncio.to_thread(ui.stdout.readline) for _ in range(3)]
        assert said[0].strip() == f"claimcheck console at http://127.0.0.1:{port}/"
        assert "the stack is down" in said[2] and "approvals need the stack" in said[2]
        url = f"http://127.0.0.1:{port}"
        listed = await get(f"{url}/")
        assert listed.status == 200 and "3 workflow(s)" in listed.body
        assert "The stack is down" in listed.body
        broken = await get(f"{url}/workflows/{completed}")
        assert "HASH CHAIN BROKEN" in broken.body
        assert (await get(f"{url}/api/workflows/{completed}")).json()["chain"]["intact"] is False
        token = (settings.state_dir / "credentials" / "console.token").read_text().strip()
        assert (settings.state_dir / "credentials" / "console.token").stat().st_mode & 0o077 == 0
        escalation = (await get(f"{url}/api/workflows/{press}")).json()["escalations"][0]
        refused = await post_json(
            f"{url}/api/escalations/{escalation['escalationId']}/approve",
            {"approver": "dana"},
            {"Authorization": f"Bearer {token}"},
        )
        assert refused.status == 503 and "claimcheck up" in refused.json()["detail"]
    finally:
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=15) == 0


def start_ui(state_dir: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "ui", "--state-dir", str(state_dir), "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "400"},
    )


def next_evidence_version(settings: Settings, workflow_id: str) -> int:
    from bus.ledger import Ledger

    ledger = Ledger.from_url(settings.ledger_url())
    try:
        return next(e.version for e in ledger.history(workflow_id) if e.type == "EvidenceRecorded")
    finally:
        ledger.close()


def forge(document: dict) -> None:
    document["evidence"]["refs"] = {"ticketId": "T-999"}


class _Quiet:
    def print(self, *args: object, **kwargs: object) -> None:
        pass
