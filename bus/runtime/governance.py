"""What the runtime decides after a failure: the failure table applied to one workflow.

These functions run inside a ledger command, so the failure, the decision and
its consequence (an escalation, a stopped workflow) commit together.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from bus.ledger import Workflow
from bus.runtime.policy import MODEL_STRATEGIES, FailureKind, Policy, RetryDecision
from handoff_schemas import RetryAdvice


def handoff_of(step_key: str) -> str:
    """Step keys are ``<handoffId>/<n>``: the part that names one handling of a handoff."""
    return step_key.rpartition("/")[0] or step_key


def rule_uses(workflow: Workflow) -> Counter[str]:
    """Executions each permission rule allowed so far in ``workflow`` (for ``max_calls``)."""
    return Counter(e["rule"] for e in workflow.evidence.values() if e["permission"] == "allowed")


def failure_count(workflow: Workflow, kind: str, scope: str) -> int:
    """Failures of ``kind`` in one step, or in all steps of one handling (``<handoffId>``)."""
    return sum(
        1
        for f in workflow.failures
        if f["kind"] == kind and (f["step_key"] == scope or f["step_key"].startswith(f"{scope}/"))
    )


def can_afford_model_call(workflow: Workflow, default_cost: float) -> bool:
    """Whether the remaining budget covers another model call like the ones so far."""
    expected = max(workflow.model_call_costs, default=default_cost)
    return workflow.cost_usd + expected <= workflow.budget_usd


def after_failure(
    workflow: Workflow,
    policy: Policy,
    agent: str,
    kind: FailureKind,
    detail: str,
    step_key: str,
    per_step: bool = False,
    action: dict[str, Any] | None = None,
) -> RetryAdvice:
    """Record a failure and decide what follows; return the advice for the agent.

    Attempts are counted per step for tool retries (``per_step``), and per
    handling of a handoff for model repairs and replans, which use new steps.
    Whatever is decided is recorded with its consequence, so no workflow is left
    waiting on a decision nobody acts on: ``fail`` fails the workflow with the
    reason, ``stop`` stops it, ``escalate`` asks a human; only a retrying strategy
    with attempts left leaves it running, for the retry.
    """
    workflow.classify_failure(agent, kind, detail, step_key)
    attempt = failure_count(workflow, kind, step_key if per_step else handoff_of(step_key))
    decision = policy.failure(kind, attempt)
    if decision.strategy in MODEL_STRATEGIES and not can_afford_model_call(
        workflow, policy.budget.expected_model_call_usd
    ):
        decision = RetryDecision(
            strategy="stop", attempt=attempt, max_attempts=decision.max_attempts
        )
        workflow.decide_retry(kind, decision.model_dump(), step_key)
        workflow.exceed_budget(
            f"the remaining budget ({workflow.budget_usd - workflow.cost_usd:.6f} USD) does not "
            f"cover another model call to recover from {kind}"
        )
        return advice(decision)
    workflow.decide_retry(kind, decision.model_dump(), step_key)
    if decision.strategy == "escalate":
        workflow.raise_escalation(kind, detail, agent, step_key, action=action)
    elif decision.strategy == "stop":
        workflow.stop(f"{kind}: {detail}")
    elif decision.strategy == "fail" and not workflow.closed:
        workflow.fail(
            f"{kind} after {decision.attempt} of {decision.max_attempts} attempts: {detail}"
        )
    return advice(decision)


def advice(decision: RetryDecision) -> RetryAdvice:
    return RetryAdvice(
        strategy=decision.strategy,
        attempt=decision.attempt,
        max_attempts=decision.max_attempts,
        delay_seconds=decision.delay_seconds,
    )


def granted(recorded: dict[str, Any], policy: Policy, kind: FailureKind) -> dict[str, Any]:
    """A recorded step reply whose ``escalate`` advice a human turned into one more attempt."""
    table = policy.failure(kind, 1)
    reply = {**recorded}
    if reply.get("ok"):
        reply["result"] = {**reply["result"], "strategy": table.strategy}
    else:
        reply["error"] = {
            **reply["error"],
            "retry": {**reply["error"]["retry"], "strategy": table.strategy},
        }
    return reply
