"""Faults: an agent could not handle a handoff, and says why, so the reason is in the ledger
(shown by ``status``, ``show`` and ``trace``) and not only in the agent's log.

A handler that raised is delivered again (the fault is recorded for each delivery, and the
last one is named when the deliveries run out). An input that does not decode, or fails
the handler's validation, will not decode on the next delivery either: the workflow fails
at once with the reason, instead of after every delivery failed the same way.
"""

from __future__ import annotations

from bus.ledger import Workflow
from bus.runtime.protocol import Handler
from bus.runtime.steps import Steps
from handoff_schemas import FaultReport, RetryAdvice

PERMANENT = frozenset({"undecodable_input", "invalid_payload"})
"""Faults a redelivery cannot change: the same bytes fail the same way."""


class FaultHandlers:
    def __init__(self, steps: Steps) -> None:
        self.steps = steps

    def operations(self) -> dict[str, Handler]:
        return {"fault": self.fault}

    async def fault(self, agent: str, report: FaultReport) -> RetryAdvice:
        """Record the fault; advise ``retry`` (the agent naks) or ``fail`` (the workflow ended)."""

        def change(workflow: Workflow) -> RetryAdvice:
            workflow.report_fault(
                agent,
                report.kind,
                report.handoff_id,
                report.error_type,
                report.message,
                report.trace,
                report.delivery,
                report.step_key,
            )
            if report.kind not in PERMANENT:  # the inbox's max deliveries bound the retries
                return RetryAdvice(strategy="retry", attempt=report.delivery, max_attempts=0)
            what = report.kind.replace("_", " ")
            workflow.fail(
                f"{agent} cannot handle handoff {report.handoff_id}: {what} "
                f"({report.error_type}: {report.message})"
            )
            return RetryAdvice(strategy="fail", attempt=report.delivery, max_attempts=1)

        return await self.steps.step(agent, "fault", report.workflow_id, report.step_key, change)
