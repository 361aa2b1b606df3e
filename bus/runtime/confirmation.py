"""Checking recorded side effects against the real systems: each succeeded evidence record
is put to its tool's own system (the tool's ``confirm`` hook, see
:data:`~bus.runtime.catalogue.Confirm`), and the answer is recorded beside the evidence
(``claimcheck verify --external``).

The runtime holds no tool code, so it asks the tool's host (``<prefix>.tool.<name>.confirm``),
which runs the hook; with the stack down, the CLI runs the project's hooks itself. The
evidence itself never changes: a ticket deleted since, a severity changed in the ticket
store, a message that never reached the mail server are recorded as ``contradicted``
checks, evidence whose system cannot be asked as ``unconfirmable``, and the views show
either beside the claimed items that rest on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError

from bus.ledger import Workflow
from bus.runtime.catalogue import CannotConfirm, ToolSpec
from bus.runtime.protocol import Handler, Refusal
from bus.runtime.steps import Steps
from bus.settings import Settings
from bus.transport.subjects import OPERATOR, Subjects
from handoff_schemas import (
    ConfirmReply,
    ConfirmRequest,
    Evidence,
    ExternalCheck,
    SchemaError,
    decode,
    encode,
)

CONFIRM_TIMEOUT = 10.0
"""Seconds one tool's system has to answer; one that does not is ``unconfirmable``."""


def tool_of(evidence: Evidence) -> str:
    return evidence.tool or evidence.action


def external_check(evidence: Evidence, outcome: str, problems: list[str]) -> ExternalCheck:
    return ExternalCheck(
        evidence_id=evidence.audit_id,
        workflow_id=evidence.workflow_id,
        tool=tool_of(evidence),
        outcome=outcome,  # type: ignore[arg-type]
        checked_at=datetime.now(UTC).isoformat(),
        problems=problems,
    )


async def check(spec: ToolSpec | None, settings: Settings, evidence: Evidence) -> ExternalCheck:
    """What the tool's own system says of one recorded side effect (run where the code is)."""
    try:
        if spec is None or spec.confirm is None:
            raise CannotConfirm(f"{tool_of(evidence)} has no way to ask its system")
        problems = await asyncio.wait_for(spec.confirm(evidence, settings), CONFIRM_TIMEOUT)
        outcome = "contradicted" if problems else "confirmed"
    except CannotConfirm as why:
        outcome, problems = "unconfirmable", [str(why)]
    except Exception as error:  # a system that fails to answer confirms nothing
        outcome, problems = "unconfirmable", [f"asking failed: {type(error).__name__}: {error}"]
    return external_check(evidence, outcome, problems)


async def check_here(
    tools: Mapping[str, ToolSpec], settings: Settings, records: Iterable[dict[str, Any]]
) -> list[ExternalCheck]:
    """Every record checked by tool code in this process (the CLI, with the stack down)."""
    found = [msgspec.convert(record, Evidence) for record in side_effects(records)]
    return list(
        await asyncio.gather(
            *(check(tools.get(tool_of(evidence)), settings, evidence) for evidence in found)
        )
    )


async def ask_host(nc: Client, subjects: Subjects, evidence: Evidence) -> ExternalCheck:
    """The tool's host runs the check; no host answering confirms nothing."""
    try:
        answer = await nc.request(
            subjects.tool_confirm(tool_of(evidence)), encode(evidence), CONFIRM_TIMEOUT
        )
        return decode(answer.data, ExternalCheck)
    except (NatsError, TimeoutError, SchemaError) as error:
        why = f"no tool host answered for {tool_of(evidence)}: {type(error).__name__}"
        return external_check(evidence, "unconfirmable", [why])


def side_effects(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records that say a side effect happened: only those can be confirmed."""
    return [record for record in records if record["status"] == "succeeded"]


class ConfirmationHandlers:
    def __init__(self, steps: Steps, nc: Client, subjects: Subjects) -> None:
        self.steps = steps
        self.nc = nc
        self.subjects = subjects

    def operations(self) -> dict[str, Handler]:
        return {"confirm": self.confirm}

    async def confirm(self, agent: str, request: ConfirmRequest) -> ConfirmReply:
        """Check every side effect of one workflow, and record each answer in it."""
        if agent != OPERATOR:
            raise Refusal("permission_denied", f"only the operator audits workflows, not {agent!r}")
        records = await self.steps.read(
            request.workflow_id, lambda wf: side_effects(dict(r) for r in wf.evidence.values())
        )
        checks = await asyncio.gather(
            *(
                ask_host(self.nc, self.subjects, msgspec.convert(record, Evidence))
                for record in records
            )
        )

        def record(workflow: Workflow) -> None:
            for found in checks:
                workflow.record_external_check(msgspec.to_builtins(found))

        await self.steps.command(request.workflow_id, record)
        return ConfirmReply(checks=list(checks))
