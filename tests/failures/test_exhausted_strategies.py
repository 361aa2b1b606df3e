"""No workflow waits forever: every strategy of the failure table, once exhausted, ends in a
recorded outcome (failed with its reason, stopped, or a question for a human), never a no-op.

The failure table is applied to a real ``Workflow`` aggregate, as the runtime does inside a
ledger command; the end-to-end path (a tool host that never answers) is in
``test_availability.py``.
"""

from __future__ import annotations

from typing import get_args

import pytest

from bus.ledger import Workflow
from bus.runtime.governance import after_failure
from bus.runtime.policy import FailureKind, FailureStrategy, Policy, Strategy

KINDS: tuple[str, ...] = get_args(FailureKind)
STRATEGIES: tuple[str, ...] = get_args(Strategy)
RETRYING = ("retry", "repair", "replan")


def new_workflow() -> Workflow:
    workflow = Workflow(
        task="t", agent="triage", artifact_id="a", scope="s", started_by="cli", budget_usd=1.0
    )
    return workflow


def types(workflow: Workflow) -> list[str]:
    return [type(event).__name__ for event in workflow.collect_events()]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("exhausted", STRATEGIES)
def test_every_exhausted_strategy_ends_the_wait(kind: str, strategy: str, exhausted: str) -> None:
    table = FailureStrategy(strategy=strategy, max_attempts=3, exhausted=exhausted)  # type: ignore[arg-type]
    policy = Policy(failures={kind: table})  # type: ignore[dict-item]
    workflow = new_workflow()
    advices = []
    for _ in range(3):
        advices.append(after_failure(workflow, policy, "triage", kind, "it broke", "h/1", True))  # type: ignore[arg-type]
        if advices[-1].strategy not in RETRYING:
            break
    final = advices[-1]
    assert final.strategy in ("fail", "stop", "escalate")
    assert workflow.status in ("failed", "stopped", "escalated")
    events = types(workflow)
    expected = {"fail": "Failed", "stop": "Stopped", "escalate": "EscalationRaised"}
    assert any(name.endswith(expected[final.strategy]) for name in events), events
    if strategy in RETRYING:
        assert len(advices) == 3  # the attempts were used first
        assert final.strategy == (exhausted if exhausted not in RETRYING else "escalate")


def test_exhausted_fail_records_the_reason() -> None:
    policy = Policy(
        failures={"tool_error": FailureStrategy(strategy="retry", max_attempts=2, exhausted="fail")}
    )
    workflow = new_workflow()
    first = after_failure(workflow, policy, "triage", "tool_error", "SMTP 451", "h/1", True)
    assert first.strategy == "retry" and workflow.status == "running"
    final = after_failure(workflow, policy, "triage", "tool_error", "SMTP 451", "h/1", True)
    assert final.strategy == "fail"
    assert workflow.status == "failed"
    [failed] = [e for e in workflow.collect_events() if type(e).__name__ == "WorkflowFailed"]
    assert failed.reason == "tool_error after 2 of 2 attempts: SMTP 451"  # type: ignore[attr-defined]
