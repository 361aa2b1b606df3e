"""Verdicts on claims: what an agent asserted, judged against its workflow's evidence only.

A pure function of the claim and the evidence, so a replay with today's code reaches
the same verdict, and a projection can explain it.

A claim is a list of items (action, target, facts, status, one evidence id). Each item
is checked against the evidence it names:

- the evidence exists in this workflow (else ``unsupported``);
- no other item of the claim rests on it (else ``unsupported``): two emails claimed on
  the evidence of one is a lie;
- it was produced by the claiming agent's own steps, or by an agent it delegated to
  through a recorded handoff whose claim verified on that evidence (else ``unsupported``);
- it is the latest outcome of its step (else ``contradicted``);
- its action, target and status are the asserted ones (else ``contradicted``);
- each asserted fact was recorded, and with the asserted value (else ``unsupported`` /
  ``contradicted``).

The claim's verdict is the worst of its items' (``contradicted`` over ``unsupported``);
a claim with no items is ``unsupported``; a claim whose items all verify but that does
not meet its task's definition of done is ``partial``, with what is missing listed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from handoff_schemas import CheckedItem, ClaimItem

Record = dict[str, Any]


@dataclass(frozen=True)
class Requirement:
    """One piece of evidence a task's definition of done needs (from the policy's ``done``)."""

    action: str
    status: str = "succeeded"
    target: str = "*"

    def describe(self) -> str:
        where = "" if self.target == "*" else f" on {self.target}"
        return f"{self.action}{where} {self.status}"

    def met_by(self, record: Record) -> bool:
        return (
            record["action"] == self.action
            and record["status"] == self.status
            and fnmatchcase(record["resource"], self.target)
        )


@dataclass
class Scope:
    """What an item may rest on, for one agent in one workflow.

    ``delegated`` holds the evidence ids that verified claims of agents this agent
    handed work to rest on: the one way another agent's evidence becomes citable.
    """

    agent: str
    evidence: Mapping[str, Record]
    delegated: set[str] = field(default_factory=set)

    def latest_of_step(self) -> dict[str, str]:
        """Each step's latest evidence id: evidence is kept in the order it was recorded."""
        latest: dict[str, str] = {}
        for audit_id, record in self.evidence.items():
            if record.get("stepKey"):
                latest[record["stepKey"]] = audit_id
        return latest


def judge_item(
    item: ClaimItem, scope: Scope, latest: Mapping[str, str], used: set[str]
) -> CheckedItem:
    """One item's verdict and reason; every problem found is named, not only the first."""
    record = scope.evidence.get(item.evidence_id)
    unsupported: list[str] = []
    contradicted: list[str] = []
    if record is None:
        unsupported.append(f"no evidence {item.evidence_id} in this workflow")
    else:
        eid = item.evidence_id
        if eid in used:
            unsupported.append(f"{eid} already backs another item of this claim")
        if record["actor"] != scope.agent and eid not in scope.delegated:
            unsupported.append(
                f"{eid} was produced by {record['actor']}, not by {scope.agent} nor by an agent "
                f"it handed the work to whose claim on it verified"
            )
        step = record.get("stepKey")
        if step and latest.get(step) != eid:
            contradicted.append(
                f"{eid} was superseded by {latest[step]}, a later outcome of {step}"
            )
        if record["action"] != item.action:
            contradicted.append(f"{eid} is {record['action']}, not {item.action}")
        if record["resource"] != item.target:
            contradicted.append(f"{eid} targets {record['resource']}, not {item.target}")
        if record["status"] != item.status:
            contradicted.append(f"claim asserts {item.status}, but {eid} is {record['status']}")
        recorded = record.get("facts", {})
        for name, value in item.facts.items():
            if name not in recorded:
                unsupported.append(f"{eid} records no fact {name!r}")
            elif recorded[name] != value:
                contradicted.append(f"{name} is {recorded[name]!r} in {eid}, not {value!r}")
    used.add(item.evidence_id)
    verdict = "contradicted" if contradicted else "unsupported" if unsupported else "verified"
    reason = "; ".join(contradicted + unsupported) or f"matches {item.evidence_id}"
    return CheckedItem(
        action=item.action,
        target=item.target,
        status=item.status,
        evidence_id=item.evidence_id,
        facts=dict(item.facts),
        verdict=verdict,
        reason=reason,
    )


def missing_for_done(requirements: Sequence[Requirement], records: Sequence[Record]) -> list[str]:
    """What a definition of done still needs; each record satisfies one requirement at most."""
    available = list(records)
    missing = []
    for requirement in requirements:
        match = next((r for r in available if requirement.met_by(r)), None)
        if match is None:
            missing.append(requirement.describe())
        else:
            available.remove(match)
    return missing


def judge_claim(
    items: Sequence[ClaimItem], scope: Scope, requirements: Sequence[Requirement] = ()
) -> tuple[str, str, list[CheckedItem], list[str]]:
    """Verdict, reason, checked items and what is missing for done, for one claim."""
    latest = scope.latest_of_step()
    used: set[str] = set()
    checked = [judge_item(item, scope, latest, used) for item in items]
    if not checked:
        return "unsupported", "the claim has no items: nothing it says can be checked", [], []
    flagged = [
        f"item {n} ({item.action} {item.target}): {item.reason}"
        for n, item in enumerate(checked, 1)
        if item.verdict != "verified"
    ]
    verdicts = {item.verdict for item in checked}
    for verdict in ("contradicted", "unsupported"):
        if verdict in verdicts:
            return verdict, "; ".join(flagged), checked, []
    missing = missing_for_done(requirements, [scope.evidence[i.evidence_id] for i in checked])
    if missing:
        return "partial", f"not done: missing {', '.join(missing)}", checked, missing
    return "verified", "every item matches its evidence", checked, []


def statement(items: Sequence[CheckedItem]) -> str:
    """The readable statement of a claim, generated from its checked items only."""
    if not items:
        return "nothing checkable was claimed"
    parts = []
    for item in items:
        facts = ", ".join(f"{name}={value!r}" for name, value in sorted(item.facts.items()))
        parts.append(
            f"{item.action} {item.target} {item.status}"
            + (f" ({facts})" if facts else "")
            + f" per {item.evidence_id}: {item.verdict}"
        )
    return "; ".join(parts)
