"""The governance policy: permissions, the failure table, prices and budgets, in one TOML file.

Permissions are deny by default; the first rule that matches the actor (the
agent's NATS identity, never a payload field), the action and the resource (by
glob) decides::

    [[rules]]
    name = "notifier-emails-internal"
    actor = "notifier"
    action = "send_email"
    resource = "mailto:*@acme.example"
    effect = "allow"
    max_calls = 3            # at most 3 allowed executions per workflow
    require_approval = false # true: a human must approve each execution

The runtime decides when an agent checks a permission and again when the action
executes: an earlier "allowed" is never trusted at execution time.

``[failures.<kind>]`` tunes the failure table of DESIGN.md, ``[prices.<family>]``
overrides a model family's prices (per million tokens) in the shipped table
(:mod:`bus.runtime.prices`), ``[tools.<tool>]`` prices tool calls,
``[budget]`` gives each workflow its default budget, ``[deadlines]`` the task
deadlines and the step lease the runtime's sweeper enforces, and ``[tasks.<task>]``
declares a task's definition of done: the evidence that must exist (and be
claimed) before the task counts as done::

    [tasks.notify_escalation]
    done = [{action = "send_email", status = "succeeded", target = "mailto:*"}]
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from bus.ledger.verdicts import Requirement
from bus.runtime.prices import Price, PriceError, PriceTable, load_prices
from handoff_schemas import Usage

DEFAULT_POLICY = Path(__file__).with_name("default_policy.toml")

FailureKind = Literal[
    "tool_timeout",
    "tool_error",
    "invalid_tool_payload",
    "bad_reasoning",
    "permission_denied",
    "cost_budget_exceeded",
    "unverified_claim",
    "step_stalled",
    "deadline_exceeded",
    "handoff_quarantined",
    "model_unavailable",
    "model_error",
    "model_truncated",
    "model_refused",
]
Strategy = Literal["retry", "repair", "replan", "escalate", "stop", "fail"]
MODEL_STRATEGIES = frozenset({"repair", "replan"})
"""Strategies whose next attempt calls the model, so the budget must cover it."""
RETRYING = frozenset({"retry", *MODEL_STRATEGIES})
"""Strategies that try again; once attempts run out, each ends in ``exhausted`` instead."""


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file, rule and field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(Strict):
    name: str = Field(min_length=1)
    actor: str = "*"
    action: str = "*"
    resource: str = "*"
    effect: Literal["allow", "deny"]
    reason: str = ""
    max_calls: int | None = Field(None, ge=0)
    require_approval: bool = False

    def matches(self, actor: str, action: str, resource: str) -> bool:
        return (
            fnmatchcase(actor, self.actor)
            and fnmatchcase(action, self.action)
            and fnmatchcase(resource, self.resource)
        )


Outcome = Literal["allowed", "denied", "approval_required"]


class Decision(Strict):
    outcome: Outcome
    rule: str
    reason: str

    @property
    def allowed(self) -> bool:
        return self.outcome == "allowed"


class FailureStrategy(Strict):
    """What the runtime does about one kind of failure, and how often."""

    strategy: Strategy
    max_attempts: int = Field(1, ge=1)
    backoff_seconds: float = Field(0.0, ge=0)
    exhausted: Strategy = "escalate"
    """What ends the workflow's wait once attempts run out: ``fail`` (with the reason),
    ``stop``, or ``escalate`` to a human; a retrying strategy here escalates."""


DEFAULT_FAILURES: dict[str, FailureStrategy] = {
    "tool_timeout": FailureStrategy(
        strategy="retry", max_attempts=3, backoff_seconds=0.2, exhausted="fail"
    ),
    "tool_error": FailureStrategy(
        strategy="retry", max_attempts=3, backoff_seconds=0.2, exhausted="fail"
    ),
    "invalid_tool_payload": FailureStrategy(strategy="repair", max_attempts=3),
    "bad_reasoning": FailureStrategy(strategy="replan", max_attempts=3),
    "permission_denied": FailureStrategy(strategy="escalate"),
    "cost_budget_exceeded": FailureStrategy(strategy="stop"),
    "unverified_claim": FailureStrategy(strategy="escalate"),
    # The sweeper's findings: a stalled step gets its handoff delivered once more, then a
    # human; a workflow past its task's deadline fails.
    "step_stalled": FailureStrategy(strategy="retry", max_attempts=2, exhausted="escalate"),
    "deadline_exceeded": FailureStrategy(strategy="fail"),
    # A handoff the relay could not deliver (too large for the server, refused by its
    # stream, unreadable): no agent will ever see it, so a human decides at once (an
    # approval delivers it again, after the cause is fixed; a denial fails the workflow).
    "handoff_quarantined": FailureStrategy(strategy="escalate"),
    # A model attempt that failed: overloaded, rate limited, timeout, connection error is
    # tried again with backoff and jitter, never before its retry-after, within the model's
    # availability window; authentication, permission, invalid request or an unknown model
    # will fail every time, so the workflow fails at once with the reason.
    "model_unavailable": FailureStrategy(
        strategy="retry", max_attempts=20, backoff_seconds=1.0, exhausted="fail"
    ),
    "model_error": FailureStrategy(strategy="fail"),
    # An answer cut off at its token limit is asked for again with more room (up to the
    # agent's max_tokens_ceiling); a model that keeps running out goes to a human. A
    # refusal goes to a human at once: approving lets the model be asked once more.
    "model_truncated": FailureStrategy(strategy="repair", max_attempts=3, exhausted="escalate"),
    "model_refused": FailureStrategy(strategy="escalate"),
}


class RetryDecision(Strict):
    strategy: Strategy
    attempt: int
    max_attempts: int
    delay_seconds: float = 0.0


class ToolPrice(Strict):
    cost_usd: float = Field(0.0, ge=0)


class Budget(Strict):
    default_usd: float = Field(1.0, ge=0)
    expected_model_call_usd: float = Field(
        0.0, ge=0, description="Assumed cost of a model call when a workflow has made none yet."
    )


class Deadlines(Strict):
    """How long work may take before the runtime's sweeper acts on it (failure table kinds
    ``deadline_exceeded`` and ``step_stalled`` say how)."""

    default_task_seconds: float = Field(3600.0, gt=0, description="A task's deadline.")
    tasks: dict[str, float] = Field({}, description="Deadlines of named tasks, in seconds.")
    step_lease_seconds: float = Field(
        300.0, gt=0, description="A running workflow with no new event for this long is stalled."
    )

    def for_task(self, task: str) -> float:
        return self.tasks.get(task, self.default_task_seconds)


class DoneItem(Strict):
    """One piece of evidence a task needs to be done: an ``action`` with this ``status``,
    on a resource matching ``target`` (a glob)."""

    action: str = Field(min_length=1)
    status: Literal["succeeded", "failed", "denied"] = "succeeded"
    target: str = "*"


class TaskSpec(Strict):
    """What a task declares: its definition of done."""

    done: list[DoneItem] = []


class Policy(Strict):
    rules: list[Rule] = []
    failures: dict[FailureKind, FailureStrategy] = {}
    prices: dict[str, Price] = {}
    tools: dict[str, ToolPrice] = {}
    budget: Budget = Budget()
    deadlines: Deadlines = Deadlines()
    tasks: dict[str, TaskSpec] = {}
    _price_table: PriceTable | None = PrivateAttr(None)

    def done(self) -> dict[str, list[Requirement]]:
        """Each task's definition of done, as the ledger's verdicts read it."""
        return {
            task: [Requirement(item.action, item.status, item.target) for item in spec.done]
            for task, spec in self.tasks.items()
        }

    @classmethod
    def load(cls, path: Path | None = None, prices: Path | None = None) -> Policy:
        """The policy in ``path`` (the default one), pricing models from ``prices``
        (the shipped table) with the policy's own ``[prices.*]`` on top."""
        policy = cls._read(path or DEFAULT_POLICY)
        try:
            policy._price_table = load_prices(prices)
        except PriceError as error:
            raise PolicyError(str(error)) from None
        return policy

    @classmethod
    def _read(cls, path: Path) -> Policy:
        try:
            document = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise PolicyError(f"{path}: {error}") from None
        try:
            return cls.model_validate(document)
        except ValidationError as error:
            raise PolicyError(describe(path, document, error)) from None

    def decide(
        self, actor: str, action: str, resource: str, uses: Mapping[str, int] | None = None
    ) -> Decision:
        """Decide one action; ``uses`` counts allowed executions per rule in this workflow."""
        for rule in self.rules:
            if not rule.matches(actor, action, resource):
                continue
            if rule.effect == "deny":
                return Decision(
                    outcome="denied",
                    rule=rule.name,
                    reason=rule.reason or f"rule {rule.name!r} denies {action} on {resource}",
                )
            if rule.max_calls is not None and (uses or {}).get(rule.name, 0) >= rule.max_calls:
                return Decision(
                    outcome="denied",
                    rule=rule.name,
                    reason=f"rule {rule.name!r} allows at most {rule.max_calls} per workflow",
                )
            if rule.require_approval:
                return Decision(
                    outcome="approval_required",
                    rule=rule.name,
                    reason=f"rule {rule.name!r} requires a human's approval",
                )
            return Decision(
                outcome="allowed",
                rule=rule.name,
                reason=rule.reason or f"rule {rule.name!r} allows {action} on {resource}",
            )
        return Decision(
            outcome="denied",
            rule="default-deny",
            reason=f"no rule allows {actor} to {action} on {resource}",
        )

    def failure(self, kind: FailureKind, attempt: int) -> RetryDecision:
        """The strategy for the ``attempt``-th failure of ``kind`` (1 = the first)."""
        table = self.failures.get(kind) or DEFAULT_FAILURES[kind]
        if attempt < table.max_attempts:
            return RetryDecision(
                strategy=table.strategy,
                attempt=attempt,
                max_attempts=table.max_attempts,
                delay_seconds=table.backoff_seconds * 2 ** (attempt - 1),
            )
        final = table.strategy if table.strategy not in RETRYING else table.exhausted
        if final in RETRYING:  # "retry again" once the retries ran out would never end
            final = "escalate"
        return RetryDecision(strategy=final, attempt=attempt, max_attempts=table.max_attempts)

    @property
    def price_table(self) -> PriceTable:
        """Model prices by family: the loaded table with this policy's ``[prices.*]`` on top."""
        return (self._price_table or load_prices()).overridden(self.prices)

    def model_cost(self, model: str, usage: Usage) -> float:
        """What one call of ``model`` cost, priced by its family from the provider's usage."""
        return self.price_table.cost(model, usage)

    def tool_cost(self, tool: str) -> float:
        return (self.tools.get(tool) or ToolPrice()).cost_usd


def describe(path: Path, document: dict, error: ValidationError) -> str:
    """One line per problem: file, rule (by name when it has one) and field."""
    lines = []
    for problem in error.errors():
        location = list(problem["loc"])
        where = ".".join(str(part) for part in location)
        if location[:1] == ["rules"] and len(location) > 1 and isinstance(location[1], int):
            rules = document.get("rules") or []
            index = location[1]
            rule = rules[index] if isinstance(rules, list) and index < len(rules) else {}
            name = rule.get("name") if isinstance(rule, dict) else None
            field = ".".join(str(part) for part in location[2:]) or "(rule)"
            where = f"rule {index + 1}" + (f" ({name!r})" if name else "") + f", field {field!r}"
        lines.append(f"{path}: {where}: {problem['msg']}")
    return "\n".join(lines)
