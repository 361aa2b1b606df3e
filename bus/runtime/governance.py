"""What the runtime decides after a failure: the failure table applied to one workflow.

These functions run inside a ledger command, so the failure, the decision and
its consequence (an escalation, a stopped workflow) commit together.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bus.ledger import Workflow
from bus.ledger.relay import DELIVERIES
from bus.runtime.policy import MODEL_STRATEGIES, RETRYING, FailureKind, Policy, RetryDecision
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


MAX_MODEL_BACKOFF_SECONDS = 30.0
MODEL_JITTER = 0.25
"""Up to this fraction of the delay is added at random, so agents do not return together."""


def pace_model_retry(
    workflow: Workflow,
    policy: Policy,
    agent: str,
    decision: RetryDecision,
    detail: str,
    step_key: str,
    retry_after: float | None,
    window_seconds: float,
) -> tuple[RetryDecision, str]:
    """When an unavailable model may be asked again: backoff with jitter, never before its
    ``retry-after``, and only within the availability window of this handling.

    Returns the decision (the table's exhausted strategy once the window is over) and
    the reason a final decision gives.
    """
    reason = f"after {decision.attempt} of {decision.max_attempts} attempts: {detail}"
    if decision.strategy != "retry":
        return decision, reason
    now = datetime.now(UTC)
    recorded = workflow.model_windows.get(handoff_of(step_key))
    window_ends = (
        datetime.fromisoformat(recorded) if recorded else now + timedelta(seconds=window_seconds)
    )
    backoff = min(decision.delay_seconds, MAX_MODEL_BACKOFF_SECONDS)
    delay = max(backoff, retry_after or 0.0)
    delay += random.uniform(0, MODEL_JITTER * delay)
    if now + timedelta(seconds=delay) > window_ends:
        final = policy.failure("model_unavailable", decision.max_attempts)
        reason = (
            f"the model stayed unavailable through its availability window "
            f"({decision.attempt} attempts): {detail}"
        )
        return final.model_copy(update={"attempt": decision.attempt}), reason
    workflow.note_model_unavailable(
        agent,
        detail,
        decision.attempt,
        retry_after,
        round(delay, 3),
        window_ends.isoformat(),
        step_key,
    )
    return decision.model_copy(update={"delay_seconds": round(delay, 3)}), reason


def after_failure(
    workflow: Workflow,
    policy: Policy,
    agent: str,
    kind: FailureKind,
    detail: str,
    step_key: str,
    per_step: bool = False,
    action: dict[str, Any] | None = None,
    claim_id: str | None = None,
    retry_after: float | None = None,
    model_window_seconds: float = 60.0,
) -> RetryAdvice:
    """Record a failure and decide what follows; return the advice for the agent.

    Attempts are counted per step for tool retries (``per_step``), and per
    handling of a handoff for model repairs and replans, which use new steps.
    Whatever is decided is recorded with its consequence, so no workflow is left
    waiting on a decision nobody acts on: ``fail`` fails the workflow with the
    reason, ``stop`` stops it, ``escalate`` asks a human; only a retrying strategy
    with attempts left leaves it running, for the retry. A model that was unavailable
    is paced by :func:`pace_model_retry`.
    """
    workflow.classify_failure(agent, kind, detail, step_key)
    attempt = failure_count(workflow, kind, step_key if per_step else handoff_of(step_key))
    decision = policy.failure(kind, attempt)
    reason = f"after {decision.attempt} of {decision.max_attempts} attempts: {detail}"
    calls_model = decision.strategy in MODEL_STRATEGIES
    if kind == "model_unavailable":
        decision, reason = pace_model_retry(
            workflow,
            policy,
            agent,
            decision,
            detail,
            step_key,
            retry_after,
            model_window_seconds,
        )
        calls_model = decision.strategy == "retry"
    if calls_model and not can_afford_model_call(workflow, policy.budget.expected_model_call_usd):
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
        workflow.raise_escalation(kind, detail, agent, step_key, action=action, claim_id=claim_id)
    elif decision.strategy == "stop":
        workflow.stop(f"{kind}: {detail}")
    elif decision.strategy == "fail" and not workflow.closed:
        workflow.fail(f"{kind} {reason}")
    return advice(decision)


def after_quarantine(policy: Policy) -> Callable[[Workflow, str, dict[str, Any], str], None]:
    """What the relay calls when it quarantined one of a workflow's events.

    A quarantined handoff (its first delivery or a human's resumption) reaches no agent,
    so the workflow would wait until the sweeper's step lease ran out; instead the failure
    table decides at once (``handoff_quarantined``: a human, by default), in the command
    that records the quarantine. Any other quarantined event only lacks its stream copy.
    """

    def decide(workflow: Workflow, event_type: str, data: dict[str, Any], reason: str) -> None:
        handoff = data.get("handoff")
        if event_type not in DELIVERIES or not handoff or workflow.closed:
            return
        detail = (
            f"{event_type} of handoff {handoff['handoffId']} to {handoff['to']} "
            f"could not be delivered: {reason}"
        )
        step_key = f"{handoff['handoffId']}/quarantined"
        after_failure(
            workflow, policy, handoff["to"], "handoff_quarantined", detail, step_key, per_step=True
        )

    return decide


def advice(decision: RetryDecision) -> RetryAdvice:
    return RetryAdvice(
        strategy=decision.strategy,
        attempt=decision.attempt,
        max_attempts=decision.max_attempts,
        delay_seconds=decision.delay_seconds,
    )


def granted(recorded: dict[str, Any], policy: Policy, kind: FailureKind) -> dict[str, Any]:
    """A recorded step reply whose ``escalate`` advice a human turned into one more attempt:
    the kind's own retrying strategy, or a repair (ask the model again) for a kind that
    escalates at once (a refusal)."""
    strategy = policy.failure(kind, 1).strategy
    if strategy not in RETRYING:
        strategy = "repair"
    reply = {**recorded}
    if reply.get("ok"):
        reply["result"] = {**reply["result"], "strategy": strategy}
    else:
        reply["error"] = {
            **reply["error"],
            "retry": {**reply["error"]["retry"], "strategy": strategy},
        }
    return reply
