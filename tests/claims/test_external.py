"""``verify --external`` (issue 11, item 7): the tools' own systems are asked whether the
recorded side effects exist as recorded. An honest run is confirmed; a deleted ticket, a
severity changed in the ticket store and a message missing at the mail server are each
reported, recorded beside the evidence, and shown beside the claimed items.

Real parts: the runtime and tool host over a real nats-server, a real SMTP exchange with
the local mail server delivering into a Maildir, the ticket tool's SQLite store, the ledger
on SQLite and PostgreSQL, and the command line as its own process.
"""

from __future__ import annotations

import asyncio
import mailbox
import sqlite3
from typing import Any

import pytest

from bus.operations.mailbox import Mailbox
from bus.operations.operators import OperatorError, ask_runtime
from bus.runtime.catalogue import Catalogue
from bus.tools import complaints
from bus.transport.subjects import Subjects
from handoff_schemas import ConfirmReply, ConfirmRequest, ExternalCheck
from tests.claims import test_false_completion as suite
from tests.claims.test_false_completion import Runner
from tests.conftest import Bus, claimcheck

POLICY = suite.POLICY
in_process = suite.in_process  # the suite's agents and policy, with the real tools


@pytest.fixture
def catalogue() -> Catalogue:
    """The example tools as they are, each with its ``confirm`` hook."""
    return complaints


@pytest.fixture
def delivering(mailbox: Mailbox, bus: Bus) -> Mailbox:
    """The mail server delivers into the Maildir the email tool is told to read."""
    mailbox.maildir = bus.settings.maildir_path()
    return mailbox


async def confirm(bus: Bus, workflow_id: str) -> dict[str, ExternalCheck]:
    """Ask the runtime as the operator; the checks by tool."""
    request = ConfirmRequest(workflow_id=workflow_id)
    reply = await ask_runtime(bus.nc, bus.subjects, "confirm", request, ConfirmReply)
    return {check.tool: check for check in reply.checks}


def tickets(bus: Bus, sql: str) -> None:
    with sqlite3.connect(bus.settings.tickets_path()) as db:
        db.execute(sql)


async def cli(bus: Bus, *args: str) -> Any:
    """The command line as its own process (off the loop: the runtime here must answer it)."""
    return await asyncio.to_thread(claimcheck, *args, env=bus.settings.as_environment())


async def test_an_honest_run_is_confirmed_by_the_ticket_store_and_the_mail_server(
    in_process: Runner, delivering: Mailbox, bus: Bus
) -> None:
    view = await in_process("several")
    assert view.status == "completed"
    checks = await confirm(bus, view.workflow_id)
    assert {tool: c.outcome for tool, c in checks.items()} == {
        "create_ticket": "confirmed",
        "send_email": "confirmed",
    }
    assert all(c.problems == [] for c in checks.values())
    verified = await cli(bus, "verify", view.workflow_id, "--external")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "the world confirms 2 of 2 recorded side effect(s)" in verified.stdout


async def test_a_changed_severity_a_deleted_ticket_and_a_missing_message_are_reported(
    in_process: Runner, delivering: Mailbox, bus: Bus
) -> None:
    view = await in_process("several")
    [ticket] = [e for e in view.evidence if e["action"] == "create_ticket"]
    [email] = [e for e in view.evidence if e["action"] == "send_email"]
    ticket_id = ticket["refs"]["ticketId"]

    tickets(bus, f"UPDATE tickets SET severity = 'low' WHERE id = {ticket_id[2:]}")
    changed = (await confirm(bus, view.workflow_id))["create_ticket"]
    assert changed.outcome == "contradicted"
    assert changed.problems == ["severity is 'low' in the system, 'high' in the evidence"]

    tickets(bus, f"DELETE FROM tickets WHERE id = {ticket_id[2:]}")
    box = mailbox.Maildir(bus.settings.maildir_path(), create=False)
    for key in list(box.keys()):
        box.remove(key)
    checks = await confirm(bus, view.workflow_id)
    assert checks["create_ticket"].problems == [f"ticket {ticket_id} is not in the ticket store"]
    assert checks["send_email"].outcome == "contradicted"
    assert checks["send_email"].problems == [
        f"no message {email['refs']['messageId']} at the mail server"
    ]

    # Recorded beside the evidence, which itself is unchanged; and shown where claims are read.
    workflow = bus.ledger.workflow(view.workflow_id)
    assert workflow.external_checks()[email["auditId"]]["outcome"] == "contradicted"
    assert workflow.evidence[email["auditId"]] == email
    claims = await cli(bus, "claims")
    assert claims.stdout.count("NOT CONFIRMED by the world (contradicted") == 2, claims.stdout
    assert f"ticket {ticket_id} is not in the ticket store" in claims.stdout
    status = await cli(bus, "status", view.workflow_id)
    assert "no message" in status.stdout and "NOT CONFIRMED" in status.stdout
    verified = await cli(bus, "verify", view.workflow_id, "--external")
    assert verified.returncode == 1
    assert verified.stdout.count("CONTRADICTED") == 2
    assert "the world contradicts 2 of 2 recorded side effect(s)" in verified.stdout


async def test_a_mail_server_that_cannot_be_asked_confirms_nothing(
    in_process: Runner, mailbox: Mailbox, bus: Bus
) -> None:
    """No Maildir to read: the email is ``unconfirmable`` (flagged), never ``confirmed``."""
    view = await in_process("several")
    checks = await confirm(bus, view.workflow_id)
    assert checks["create_ticket"].outcome == "confirmed"
    assert checks["send_email"].outcome == "unconfirmable"
    assert "no Maildir at" in checks["send_email"].problems[0]


async def test_only_the_operator_audits_and_an_unknown_workflow_is_a_clear_error(
    bus: Bus,
) -> None:
    request = ConfirmRequest(workflow_id="00000000-0000-0000-0000-000000000000")
    with pytest.raises(OperatorError, match="no workflow"):
        await ask_runtime(bus.nc, bus.subjects, "confirm", request, ConfirmReply)
    as_agent = await bus.nc.request(
        Subjects(bus.settings.prefix).runtime("triage", "confirm"), b'{"workflowId": "x"}'
    )
    assert b"permission_denied" in as_agent.data
