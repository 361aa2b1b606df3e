"""A batch of events applied in one transaction leaves the views exactly as applying the
events one at a time does: on a real SQLite file with its statements grouped into runs, on
PostgreSQL as set-based statements; a catch-up SIGKILLed mid-batch resumes to the same
views, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import Tracking

from bus.ledger.view_runner import open_views
from bus.settings import Settings
from handoff_schemas import EventEnvelope
from projections.ledger_views import dump, statements
from projections.views import ROW_KEYS, Statement, in_runs, set_based, set_statement

STARTED = datetime(2026, 11, 26, tzinfo=UTC)


def interleaved_events() -> list[EventEnvelope]:
    """Two workflows whose events alternate: each table sees inserts and updates of both."""
    lives = [list(enumerate(life_of(wf), 1)) for wf in ("wf-1", "wf-2")]
    events = []
    for turn in zip(*lives, strict=True):
        for wf, (version, (kind, data)) in zip(("wf-1", "wf-2"), turn, strict=True):
            events.append(
                EventEnvelope(
                    workflow_id=wf,
                    version=version,
                    type=kind,
                    timestamp=STARTED + timedelta(seconds=len(events)),
                    data=data,
                    position=len(events) + 1,
                )
            )
    return events


def life_of(wf: str) -> list[tuple[str, dict[str, Any]]]:
    escalation = {"escalationId": f"e-{wf}", "kind": "claim", "agent": "triage", "reason": "r"}
    usage = {"inputTokens": 7, "outputTokens": 3}
    return [
        ("WorkflowStarted", {"task": "t", "budget_usd": 1.0, "agent": "triage"}),
        ("HandoffSent", {"handoff": {"to": "notifier"}}),
        ("StepCompleted", {"step_key": "h/1", "op": "intent"}),
        ("ReasoningRecorded", {"agent": "a", "model": "m", "cost_usd": 0.1, "usage": {}}),
        ("ReasoningRecorded", {"agent": "a", "model": "m", "cost_usd": 0.2, "usage": usage}),
        ("ReasoningRecorded", {"agent": "a", "model": "m", "cost_usd": 0.3, "usage": {}}),
        ("StepCompleted", {"step_key": "h/2", "op": "context"}),
        ("ToolExecuted", {"agent": "a", "tool": "create_ticket", "cost_usd": 1 / 3}),
        ("ToolExecuted", {"agent": "a", "tool": "create_ticket", "cost_usd": 1e-05}),
        ("PermissionDecided", {"permission": "denied"}),
        ("EscalationRaised", {"escalation": {**escalation, "raisedAt": STARTED.isoformat()}}),
        ("WorkflowCompleted", {}),
        ("HandoffSent", {"handoff": {"to": "auditor"}}),  # the same SQL as an earlier event
        ("HandoffSent", {"handoff": {"to": HOSTILE}}),  # carried as data, never as SQL
    ]


HOSTILE = "a'b\"c\\d %s ? $1 ); DROP TABLE cc_costs; -- \u00fc \U0001f642\n\t]"
"""An agent's name as a lying agent might write it: quotes, escapes, placeholders, SQL."""


def test_runs_keep_each_tables_order_and_join_its_repeated_statements() -> None:
    insert_a, update_a, insert_b = (
        "INSERT INTO a (k) VALUES (?)",
        "UPDATE a SET k = ?",
        ("INSERT INTO b (k) VALUES (?)"),
    )
    batch = [(insert_a, (1,)), (insert_b, (1,)), (insert_a, (2,)), (update_a, (3,))]
    batch += [(insert_b, (2,)), (insert_a, (4,))]
    assert in_runs(batch) == [
        (insert_a, [(1,), (2,)]),
        (update_a, [(3,)]),
        (insert_a, [(4,)]),
        (insert_b, [(1,), (2,)]),
    ]


def test_a_batch_applies_as_its_events_one_at_a_time(tmp_path: Path) -> None:
    events = interleaved_events()
    one_by_one, batched = (views_in(tmp_path / name) for name in ("one", "batched"))
    for event in events:
        one_by_one.apply(statements(event), Tracking("ledger", event.position or 0))
    sql = [statement for event in events for statement in statements(event)]
    batched.apply_batch(sql, "ledger", [event.position or 0 for event in events])
    rows = dump(one_by_one)
    assert rows["cc_console_workflows"][0]["open_escalations"] == 1  # the events did apply
    assert dump(batched) == rows
    assert batched.max_tracking_id("ledger") == len(events)


def test_a_set_based_batch_on_postgresql_applies_as_the_events_one_at_a_time_on_sqlite(
    tmp_path: Path, postgres_ledger_url: str
) -> None:
    """The k-th change of each row goes in the k-th set-based statement: each row still sees
    its changes in their order, so its costs add up to the last bit as one at a time (0.1 +
    0.2 + 0.3 is not 0.1 + (0.2 + 0.3))."""
    events = interleaved_events()
    one_by_one = views_in(tmp_path / "one")
    for event in events:
        one_by_one.apply(statements(event), Tracking("ledger", event.position or 0))
    batched = open_views(Settings(state_dir=tmp_path / "pg", ledger=postgres_ledger_url))
    sql = [statement for event in events for statement in statements(event)]
    assert len(set_based(sql)) < len(sql) / 2  # the two workflows' rows share statements
    batched.apply_batch(sql, "ledger", [event.position or 0 for event in events])
    rows = dump(one_by_one)
    assert {row["usd"] for row in rows["cc_costs"]} >= {0.1 + 0.2 + 0.3}
    assert {row["agent"] for row in rows["cc_console_workflows"]} == {HOSTILE}
    assert dump(batched) == rows
    assert batched.max_tracking_id("ledger") == len(events)


def test_a_rows_changes_keep_their_order_in_the_set_based_form() -> None:
    insert = "INSERT INTO cc_steps (workflow_id, step_key, op) VALUES (?, ?, ?)"
    update = "UPDATE cc_workflows SET current_step = ? WHERE workflow_id = ?"
    batch = [(insert, ("w1", "a", "x")), (update, ("s1", "w1")), (update, ("s2", "w2"))]
    batch += [(update, ("s3", "w1")), (insert, ("w1", "b", "y")), (insert, ("w2", "a", "z"))]
    assert [json.loads(rows) for _, rows in set_based(batch)] == [
        [["w1", "a", "x"], ["w1", "b", "y"], ["w2", "a", "z"]],  # three rows: one statement
        [["s1", "w1"], ["s2", "w2"]],  # each workflow's first change of its current step,
        [["s3", "w1"]],  # then w1's second
    ]


def test_every_view_statement_has_a_set_based_form() -> None:
    for sql, params in {
        s[0]: s for event in interleaved_events() for s in statements(event)
    }.values():
        planned = set_statement(sql)
        assert len(planned.key) == len(ROW_KEYS[planned.table])
        assert "?" not in planned.sql and planned.sql.count("%s") == 1
        assert len(params) == planned.sql.count("r->>")
    with pytest.raises(ValueError):  # many rows, or none: layers would not keep their order
        set_statement("UPDATE cc_workflows SET status = ? WHERE task = ?")
    with pytest.raises(ValueError):  # no key to name the row by
        set_statement("INSERT INTO cc_steps (workflow_id, op) VALUES (?, ?)")


def views_in(state: Path) -> Any:
    return open_views(Settings(state_dir=state, ledger=f"sqlite:///{state / 'ledger.db'}"))


CATCH_UP = """
import sys
from pathlib import Path
from bus.ledger import Ledger
from bus.ledger.view_runner import REBUILD_BATCH, ViewRunner, open_views
from bus.settings import Settings
state, url = Path(sys.argv[1]), sys.argv[2]
ledger = Ledger.from_url(url)
runner = ViewRunner(ledger, open_views(Settings(state_dir=state, ledger=url)))
print("ready", flush=True)
runner.catch_up(REBUILD_BATCH)
print("done", flush=True)
"""


def test_a_catch_up_killed_at_random_points_resumes_to_the_same_views(
    tmp_path: Path, ledger_url: str
) -> None:
    """SIGKILL a views process mid-batch five times, then catch up: the views equal a
    rebuild from nothing (a batch commits with its tracking or not at all)."""
    from bus.ledger import Ledger
    from bus.ledger.view_runner import ViewRunner, rebuild_views
    from bus.operations.bench.ledger_scale import bench_signer, write_ledger

    state = tmp_path / "state"
    state.mkdir()
    ledger = Ledger.from_url(ledger_url)
    try:
        last = write_ledger(ledger, 30_000, bench_signer(), lambda _: None)
        seed = random.randrange(1_000_000)
        print(f"kill schedule seed {seed}")
        pick = random.Random(seed)
        settings = Settings(state_dir=state, ledger=ledger_url)
        views = open_views(settings)
        interrupted = 0
        for _ in range(5):
            child = subprocess.Popen(
                [sys.executable, "-c", CATCH_UP, str(state), ledger_url],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert child.stdout is not None and child.stdout.readline() == "ready\n"
                time.sleep(pick.uniform(0.0, 0.08))  # 5 kills land within the 30,000 events
                if child.poll() is None:
                    child.send_signal(signal.SIGKILL)
                    interrupted += 1
            finally:
                child.kill()
                child.wait()
        reached = views.max_tracking_id(ledger.name) or 0
        assert interrupted and reached < last  # the kills did land mid-way
        runner, patience = ViewRunner(ledger, views), time.monotonic() + 10
        # A killed child's PostgreSQL session holds the views' turn until the server notices
        # the closed connection: the runner finds it busy and, as a live one would, tries again.
        while (reached := runner.catch_up()) < last and time.monotonic() < patience:
            time.sleep(0.1)
        assert reached == last
        resumed = dump(views)
        rebuild_views(settings, ledger)
        assert dump(open_views(settings)) == resumed
    finally:
        ledger.close()


def test_an_event_that_cannot_become_sql_is_skipped_and_the_rest_apply(
    tmp_path: Path, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the next batch is prepared while one applies; a batch with an event
    that cannot become SQL still applies its other events, one by one, in order."""
    from bus.ledger import Ledger, view_runner
    from bus.ledger.view_runner import ViewRunner, drop_views
    from bus.operations.bench.ledger_scale import bench_signer, governed_workflow

    ledger = Ledger.from_url(ledger_url)
    try:
        ledger.save(*(governed_workflow(bench_signer()) for _ in range(3)))
        last = ledger.recorder.max_notification_id()
        bad = 20  # a tool step's run, in the third of seven-event batches

        def views_without(fail: bool) -> dict[str, list[dict[str, Any]]]:
            def some(event: EventEnvelope) -> list[Statement]:
                if event.position == bad:
                    if fail:
                        raise KeyError("cost_usd")
                    return []
                return statements(event)

            monkeypatch.setattr(view_runner, "statements", some)
            views = open_views(Settings(state_dir=tmp_path, ledger=ledger_url))
            drop_views(views)
            runner = ViewRunner(ledger, open_views(Settings(state_dir=tmp_path, ledger=ledger_url)))
            try:
                assert runner.catch_up(batch_size=7) == last
            finally:
                runner.shutdown()
            assert runner.views.max_tracking_id(ledger.name) == last
            return dump(runner.views)

        skipped = views_without(fail=True)
        assert skipped["cc_costs"]  # the other events applied
        assert skipped == views_without(fail=False)
    finally:
        ledger.close()


def test_runners_sharing_postgresql_views_take_turns_and_roll_nothing_back(
    tmp_path: Path, postgres_ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runners (as two runtimes run) catching up the same views at once: one has the
    turn at a time, the other ends its catch-up, and no batch is applied twice and rolled
    back (each such batch went through its events one at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    from bus.ledger import Ledger
    from bus.ledger.view_runner import ViewRunner, rebuild_views
    from bus.operations.bench.ledger_scale import bench_signer, write_ledger

    settings = Settings(state_dir=tmp_path, ledger=postgres_ledger_url)
    ledger = Ledger.from_url(postgres_ledger_url)
    rolled_back: list[int] = []
    monkeypatch.setattr(ViewRunner, "apply_one_by_one", lambda _, batch: rolled_back.append(1))
    try:
        last = write_ledger(ledger, 20_000, bench_signer(), lambda _: None)
        runners = [ViewRunner(ledger, open_views(settings)) for _ in range(2)]
        with ThreadPoolExecutor(2) as both:
            while min(runner.views.max_tracking_id(ledger.name) or 0 for runner in runners) < last:
                list(both.map(lambda runner: runner.catch_up(500), runners))
        for runner in runners:
            runner.shutdown()
        assert not rolled_back
        shared = dump(runners[0].views)
        rebuild_views(settings, ledger)
        assert dump(open_views(settings)) == shared
    finally:
        ledger.close()
