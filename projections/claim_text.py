"""A claim as a person reads it: the verdict, then each claimed item with its own verdict and
reason beside it, what the definition of done still misses, and the unchecked remark.

One wording for every place a claim is shown (``claimcheck claims``, ``status``, ``trace``,
``escalations show``, the demo's summary), whether the claim comes from the ledger's events
(``evidenceId``, ``remarks``) or from the read models (``evidence_id``,
``remarks_unchecked``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def world_text(check: Mapping[str, Any] | None) -> str:
    """What the tool's own system said of the evidence (``verify --external``), if asked."""
    if not check:
        return ""
    if check["outcome"] == "confirmed":
        return "; the world confirms it"
    return f"; NOT CONFIRMED by the world ({check['outcome']}: {'; '.join(check['problems'])})"


def item_line(item: dict[str, Any], check: Mapping[str, Any] | None = None) -> str:
    """One claimed item: its verdict, what it says, the evidence it rests on, and why, and
    what the world said of that evidence (``check``, or the view's ``world``)."""
    facts = ", ".join(f"{k}={v!r}" for k, v in sorted((item.get("facts") or {}).items()))
    evidence_id = item.get("evidenceId") or item.get("evidence_id")
    return (
        f"{item['verdict']:<12} {item['action']} {item['target']} {item['status']}"
        + (f" ({facts})" if facts else "")
        + f" per {evidence_id}: {item['reason']}"
        + world_text(check or item.get("world"))
    )


def claim_lines(
    claim: dict[str, Any],
    indent: str = "  ",
    checks: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """The claim's verdict and reason, then one line per item (each with its verdict and
    reason, and what the world said of its evidence: ``checks`` by evidence id); a claim
    recorded before structured claims shows what it asserted and cited."""
    lines = [f"{indent}claim by {claim['agent']} -> {claim['verdict']}: {claim['reason']}"]
    inner = indent + "  "
    items = claim.get("items") or []
    checks = checks or {}
    lines.extend(
        f"{inner}{item_line(item, checks.get(item.get('evidenceId', '')))}" for item in items
    )
    if not items:
        cited = claim.get("evidenceIds") or claim.get("evidence_ids") or []
        lines.append(f"{inner}asserts {claim.get('asserts')} citing {cited} (no items)")
    if claim.get("missing"):
        lines.append(f"{inner}missing for done: {', '.join(claim['missing'])}")
    # Before structured claims the free text was the summary; since, it is the remarks.
    remark = (
        claim.get("remarks") or claim.get("remarks_unchecked")
        if "items" in claim
        else claim.get("summary")
    )
    if remark:
        lines.append(f"{inner}remark (not checked): {remark!r}")
    return lines
