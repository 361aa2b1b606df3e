"""Verdicts on claims: what an agent asserted, judged against its workflow's evidence only.

A pure function of the claim and the evidence, so a replay with today's code reaches
the same verdict, and a projection can explain it.
"""

from __future__ import annotations

from typing import Any

from handoff_schemas import ClaimAssertion


def judge_claim(assertion: ClaimAssertion, evidence: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """Verdict and reason for a claim, from this workflow's evidence only."""
    if not assertion.evidence_ids:
        return "unverified", "the claim cites no evidence"
    missing = [eid for eid in assertion.evidence_ids if eid not in evidence]
    if missing:
        return "unverified", f"no evidence {', '.join(missing)} in this workflow"
    contrary = [
        eid for eid in assertion.evidence_ids if evidence[eid]["status"] != assertion.asserts
    ]
    if contrary:
        found = ", ".join(f"{eid} is {evidence[eid]['status']}" for eid in contrary)
        return "contradicted", f"claim asserts {assertion.asserts}, but {found}"
    return "verified", "every cited evidence record matches"
