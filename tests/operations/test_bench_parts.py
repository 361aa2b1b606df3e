"""Parts of the bench that must finish whatever the timing: the ledger reads on PostgreSQL
(the same rows as on SQLite, in a schema of their own), the handoff row's baseline.

Only that they finish and what they report: how fast is judged from ``claimcheck bench``.
"""

from __future__ import annotations

import asyncio

from bus.operations.bench.ledger_scale import RUNS, run_ledger_scale
from bus.operations.bench.workflows import raw_handoffs
from tests.conftest import POSTGRES_URL, postgres_connection


def bench_schemas() -> set[str]:
    with postgres_connection() as conn:
        rows = conn.execute(
            "SELECT schema_name FROM information_schema.schemata"
            " WHERE schema_name LIKE 'cc_bench_%'"
        ).fetchall()
    return {name for (name,) in rows}


def test_the_reads_run_again_on_postgresql_and_leave_no_schema_behind() -> None:
    before = bench_schemas()
    rows = asyncio.run(run_ledger_scale(500, POSTGRES_URL, lambda _: None))
    kinds = [(row.path.split(" (")[0], row.path.endswith(", PostgreSQL)")) for row in rows]
    assert kinds == [
        ("verify --offline", False),
        ("views rebuild", False),
        ("verify --offline", True),
        ("views rebuild", True),
    ]
    for row in rows:
        assert row.detail["events"] >= 500 and row.detail["peak_mb"] > 0, row
        assert 0 < row.detail["cpu"] and row.baseline_value, row
        assert row.bound, row
        # each read's fastest run, the baseline's too: one run varies by half on this machine
        assert len(row.detail["rates"]) == len(row.detail["baseline_rates"]) == RUNS, row
        assert round(row.value) == max(row.detail["rates"]), row
        assert round(row.baseline_value) == max(row.detail["baseline_rates"]), row
    assert bench_schemas() == before


def test_the_handoff_baseline_finishes_with_16_in_flight() -> None:
    """Sixteen fetches shared one pull subscription, and now and then one waited out its
    timeout for a message another had taken: 4 runs of 1,000 in 6 failed, 0 of 6 now."""
    for _ in range(5):
        assert asyncio.run(raw_handoffs(1000, lambda _: None)) > 0
