"""The permission policy: deny by default, first matching rule wins.

A policy is a TOML file of ``[[rules]]``, each matching the actor (the agent's
NATS identity, never a payload field), the action and the resource by glob::

    [[rules]]
    name = "notifier-emails-internal"
    actor = "notifier"
    action = "send_email"
    resource = "mailto:*@acme.example"
    effect = "allow"

The runtime asks the policy when an agent checks a permission, and again when
the action executes: an earlier "allowed" is never trusted at execution time.
"""

from __future__ import annotations

import tomllib
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_POLICY = Path(__file__).with_name("default_policy.toml")


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file, rule and field."""


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    actor: str = "*"
    action: str = "*"
    resource: str = "*"
    effect: Literal["allow", "deny"]
    reason: str = ""

    def matches(self, actor: str, action: str, resource: str) -> bool:
        return (
            fnmatchcase(actor, self.actor)
            and fnmatchcase(action, self.action)
            and fnmatchcase(resource, self.resource)
        )


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    allowed: bool
    rule: str
    reason: str

    @property
    def permission(self) -> Literal["allowed", "denied"]:
        return "allowed" if self.allowed else "denied"


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[Rule] = []

    @classmethod
    def load(cls, path: Path | None = None) -> Policy:
        path = path or DEFAULT_POLICY
        try:
            document = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise PolicyError(f"{path}: {error}") from None
        try:
            return cls.model_validate(document)
        except ValidationError as error:
            raise PolicyError(describe(path, document, error)) from None

    def decide(self, actor: str, action: str, resource: str) -> Decision:
        for rule in self.rules:
            if rule.matches(actor, action, resource):
                reason = rule.reason or f"rule {rule.name!r} {rule.effect}s {action} on {resource}"
                return Decision(allowed=rule.effect == "allow", rule=rule.name, reason=reason)
        return Decision(
            allowed=False,
            rule="default-deny",
            reason=f"no rule allows {actor} to {action} on {resource}",
        )


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
