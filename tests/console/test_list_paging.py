"""The console's workflow list with 100,000 workflows: paged reads from an indexed projection
table, right on SQLite and PostgreSQL, and served by the console without folding the ledger."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bus.ledger.view_runner import open_views
from bus.settings import Settings
from projections.console_views import workflow_page
from projections.views import SQLiteViews, ViewStore
from tests.conftest import web_console
from tests.console.http import get

COUNT = 100_000
AGENTS = ("triage", "notifier", "billing")
STATUSES = ("running", "escalated", "completed", "failed", "stopped")


def fill(view: ViewStore) -> None:
    """100,000 list rows in one statement (workflow i started i ms after the first)."""
    view.execute(
        "INSERT INTO cc_console_workflows (workflow_id, task, scope, status, agent, started_at, "
        "updated_at, cost_usd, unverified_claims, contradicted_claims, denied_actions, "
        "open_escalations) "
        f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {COUNT}) "
        "SELECT 'wf-' || CAST(100000 + i AS TEXT), 'task', 'scope', "
        "CASE i % 5 WHEN 0 THEN 'running' WHEN 1 THEN 'escalated' WHEN 2 THEN 'completed' "
        "WHEN 3 THEN 'failed' ELSE 'stopped' END, "
        "CASE i % 3 WHEN 0 THEN 'triage' WHEN 1 THEN 'notifier' ELSE 'billing' END, "
        "'2026-01-01T00:00:00.' || CAST(100000 + i AS TEXT), '', 0.001, "
        "CASE WHEN i % 7 = 0 THEN 1 ELSE 0 END, 0, CASE WHEN i % 11 = 0 THEN 1 ELSE 0 END, 0 "
        "FROM n"
    )


@pytest.fixture
def big_list(tmp_path: Path, ledger_url: str) -> Settings:
    settings = Settings(state_dir=tmp_path / "state", ledger=ledger_url)
    views = open_views(settings)
    fill(views)
    if not isinstance(views, SQLiteViews):
        views.execute("ANALYZE cc_console_workflows")
    return settings


def ids(rows: list[dict]) -> list[int]:
    return [int(row["workflow_id"][3:]) - 100000 for row in rows]


def test_pages_filters_and_search_over_100000_workflows(big_list: Settings) -> None:
    view = open_views(big_list)
    timings = {}

    def page(**filters: object) -> tuple[list[dict], int]:
        started = time.perf_counter()
        found = workflow_page(view, **filters)  # type: ignore[arg-type]
        timings[repr(filters)] = (time.perf_counter() - started) * 1000
        return found

    rows, total = page()
    assert total == COUNT and ids(rows) == list(range(COUNT, COUNT - 50, -1))  # newest first
    rows, _ = page(offset=COUNT - 50)
    assert ids(rows) == list(range(50, 0, -1))  # the last page ends with the first workflow

    rows, total = page(status="escalated", agent="notifier", limit=20)
    expected = [i for i in range(COUNT, 0, -1) if i % 5 == 1 and i % 3 == 1]
    assert total == len(expected) and ids(rows) == expected[:20]

    rows, total = page(verdict="unverified")
    assert total == COUNT // 7 and all(i % 7 == 0 for i in ids(rows))
    rows, total = page(verdict="flagged", limit=500)
    assert total == len([i for i in range(1, COUNT + 1) if i % 7 == 0 or i % 11 == 0])

    rows, total = page(since="2026-01-01T00:00:00.199990", until="2026-01-01T00:00:00.199995")
    assert ids(rows) == [99994, 99993, 99992, 99991, 99990]  # until is exclusive

    rows, total = page(search=" WF-14242")  # an id's beginning, as pasted
    assert total == 10 and ids(rows) == list(range(42429, 42419, -1))
    print({key: f"{ms:.1f} ms" for key, ms in timings.items()})


def test_sqlite_pages_come_from_the_indexes_not_a_scan_and_sort(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    view = open_views(settings)
    fill(view)
    for where in ("", "WHERE status = 'failed'", "WHERE agent = 'triage'"):
        plan = " ".join(
            str(row["detail"])
            for row in view.query(
                f"EXPLAIN QUERY PLAN SELECT * FROM cc_console_workflows {where} "
                "ORDER BY started_at DESC, workflow_id DESC LIMIT 50 OFFSET 5000"
            )
        )
        assert "USING INDEX" in plan and "TEMP B-TREE" not in plan, plan


async def test_the_console_serves_a_deep_page_of_100000_workflows(big_list: Settings) -> None:
    async with web_console(big_list) as url:
        started = time.perf_counter()
        listed = await get(f"{url}/api/workflows?page=1999&size=50&status=completed")
        elapsed = (time.perf_counter() - started) * 1000
        assert listed.status == 200, listed.body
        found = listed.json()
        assert found["total"] == COUNT // 5
        assert (
            ids(found["workflows"])
            == [i for i in range(COUNT, 0, -1) if i % 5 == 2][1998 * 50 : 1999 * 50]
        )
        assert found["stackUp"] is False  # no stack here: the ledger, read-only
        html = await get(f"{url}/?page=2&status=failed")
        assert html.status == 200 and "20000 workflow(s), page 2 of 400" in html.body
        print(f"deep page served in {elapsed:.1f} ms")
