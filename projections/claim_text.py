"""A claim as a person reads it: the verdict, then each claimed item with its own verdict and
reason beside it, what the definition of done still misses, and the unchecked remark.

One wording for every place a claim is shown (``claimcheck claims``, ``status``, ``trace``,
``escalations show``, the demo's summary), whether the claim comes from the ledger's events
(``evidenceId``, ``remarks``) or from the read models (``evidence_id``,
``remarks_unchecked``).
"""

from __future__ import annotations

from typing import Any


def item_line(item: dict[str, Any]) -> str:
    """One claimed item: its verdict, what it says, the evidence it rests on, and why."""
    facts = ", ".join(f"{k}={v!r}" for k, v in sorted((item.get("facts") or {}).items()))
    evidence_id = item.get("evidenceId") or item.get("evidence_id")
    return (
        f"{item['verdict']:<12} {item['action']} {item['target']} {item['status']}"
        + (f" ({facts})" if facts else "")
        + f" per {evidence_id}: {item['reason']}"
    )


def claim_lines(claim: dict[str, Any], indent: str = "  ") -> list[str]:
    """The claim's verdict and reason, then one line per item (each with its verdict and
    reason); a claim recorded before structured claims shows what it asserted and cited."""
    lines = [f"{indent}claim by {claim['agent']} -> {claim['verdict']}: {claim['reason']}"]
    inner = indent + "  "
    items = claim.get("items") or []
    lines.extend(f"{inner}{item_line(item)}" for item in items)
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
