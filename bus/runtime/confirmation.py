"""Checking recorded side effects against the real systems: each succeeded evidence record
is put to its tool's own system (:meth:`~bus.runtime.catalogue.Tool.confirm`), and the
answer is recorded beside the evidence (``claimcheck verify --external``).

The evidence itself never changes: a ticket deleted since, a severity changed in the
ticket store, a message that never reached the mail server are recorded as
``contradicted`` checks, evidence whose system cannot be asked as ``unconfirmable``, and
the views show either beside the claimed items that rest on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from bus.ledger import Workflow
from bus.runtime.catalogue import CannotConfirm, Tool
from bus.runtime.protocol import Handler, Refusal
from bus.runtime.steps import Steps
from bus.transport.subjects import OPERATOR
from handoff_schemas import ConfirmReply, ConfirmRequest, Evidence, ExternalCheck

CONFIRM_TIMEOUT = 10.0
"""Seconds one tool's system has to answer; one that does not is ``unconfirmable``."""


async def check(tools: Mapping[str, Tool], record: dict[str, Any]) -> ExternalCheck:
    """What the tool's own system says of one recorded side effect."""
    evidence = msgspec.convert(record, Evidence)
    name = evidence.tool or evidence.action
    tool = tools.get(name)
    try:
        if tool is None:
            raise CannotConfirm(f"no tool {name!r} here to ask")
        problems = await asyncio.wait_for(tool.confirm(evidence), CONFIRM_TIMEOUT)
        outcome = "contradicted" if problems else "confirmed"
    except CannotConfirm as why:
        outcome, problems = "unconfirmable", [str(why)]
    except Exception as error:  # a system that fails to answer confirms nothing
        outcome, problems = "unconfirmable", [f"asking failed: {type(error).__name__}: {error}"]
    return ExternalCheck(
        evidence_id=evidence.audit_id,
        workflow_id=evidence.workflow_id,
        tool=name,
        outcome=outcome,  # type: ignore[arg-type]
        checked_at=datetime.now(UTC).isoformat(),
        problems=problems,
    )


def side_effects(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records that say a side effect happened: only those can be confirmed."""
    return [record for record in records if record["status"] == "succeeded"]


class ConfirmationHandlers:
    def __init__(self, steps: Steps, tools: Mapping[str, Tool]) -> None:
        self.steps = steps
        self.tools = tools

    def operations(self) -> dict[str, Handler]:
        return {"confirm": self.confirm}

    async def confirm(self, agent: str, request: ConfirmRequest) -> ConfirmReply:
        """Check every side effect of one workflow, and record each answer in it."""
        if agent != OPERATOR:
            raise Refusal("permission_denied", f"only the operator audits workflows, not {agent!r}")
        records = await self.steps.read(
            request.workflow_id, lambda wf: side_effects(dict(r) for r in wf.evidence.values())
        )
        checks = await asyncio.gather(*(check(self.tools, record) for record in records))

        def record(workflow: Workflow) -> None:
            for found in checks:
                workflow.record_external_check(msgspec.to_builtins(found))

        await self.steps.command(request.workflow_id, record)
        return ConfirmReply(checks=list(checks))
