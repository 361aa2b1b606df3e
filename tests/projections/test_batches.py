"""A batch of events applied in one transaction, its statements grouped into runs, leaves the
views exactly as applying the events one at a time does, on a real SQLite file; a catch-up
SIGKILLed mid-batch resumes to the same views, on SQLite and on PostgreSQL."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from eventsourcing.persistence import Tracking

from bus.ledger.view_runner import open_views
from bus.settings import Settings
from handoff_schemas import EventEnvelope
from projections.ledger_views import dump, statements
from projections.views import in_runs

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
    return [
        ("WorkflowStarted", {"task": "t", "budget_usd": 1.0, "agent": "triage"}),
        ("HandoffSent", {"handoff": {"to": "notifier"}}),
        ("StepCompleted", {"step_key": "h/1", "op": "intent"}),
        ("ReasoningRecorded", {"agent": "a", "model": "m", "cost_usd": 0.25, "usage": {}}),
        ("StepCompleted", {"step_key": "h/2", "op": "context"}),
        ("ToolExecuted", {"agent": "a", "tool": "create_ticket", "cost_usd": 0.5}),
        ("PermissionDecided", {"permission": "denied"}),
        ("EscalationRaised", {"escalation": {**escalation, "raisedAt": STARTED.isoformat()}}),
        ("WorkflowCompleted", {}),
        ("HandoffSent", {"handoff": {"to": "auditor"}}),  # the same SQL as an earlier event
    ]


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
        assert ViewRunner(ledger, views).catch_up() == last
        resumed = dump(views)
        rebuild_views(settings, ledger)
        assert dump(open_views(settings)) == resumed
    finally:
        ledger.close()
