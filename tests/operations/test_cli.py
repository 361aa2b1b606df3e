"""The command line as a user drives it: `up` in one process, `submit` and `events` in others."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from bus.operations.mailbox import Mailbox
from tests.conftest import CLI, claimcheck, open_escalation, submit_press_complaint


def wait_for_event(state_dir: Path, workflow_id: str, event_type: str) -> list[dict]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = claimcheck("events", workflow_id, "--json", state_dir=state_dir)
        events = json.loads(result.stdout)
        if any(event["type"] == event_type for event in events):
            return events
        time.sleep(0.2)
    pytest.fail(f"no {event_type} in workflow {workflow_id}")


def test_submit_and_events_against_a_running_stack(running_stack: Path, tmp_path: Path) -> None:
    complaint = tmp_path / "complaint.json"
    complaint.write_text(json.dumps({"customer": "contoso", "text": "typo on my invoice"}))
    submitted = claimcheck(
        "submit",
        "triage_complaint",
        "--to",
        "triage",
        "--input",
        str(complaint),
        state_dir=running_stack,
    )
    assert submitted.returncode == 0, submitted.stderr
    workflow_id = submitted.stdout.strip()
    events = wait_for_event(running_stack, workflow_id, "WorkflowCompleted")
    types = [event["type"] for event in events]
    assert types[:2] == ["WorkflowStarted", "HandoffSent"]
    pipeline = [t for t in types if t != "StepCompleted"]
    assert (
        pipeline.index("IntentResolved")
        < pipeline.index("ContextAssembled")
        < pipeline.index("ReasoningRecorded")
    )
    assert (
        pipeline.index("ReasoningRecorded")
        < pipeline.index("PermissionDecided")
        < pipeline.index("ToolExecuted")
    )
    assert (
        pipeline.index("ToolExecuted")
        < pipeline.index("EvidenceRecorded")
        < pipeline.index("CheckpointReached")
    )
    assert pipeline[-2:] == ["ClaimMade", "WorkflowCompleted"]

    readable = claimcheck("events", workflow_id, state_dir=running_stack)
    assert "WorkflowCompleted" in readable.stdout


def test_a_task_the_agent_does_not_know_fails_the_workflow(
    running_stack: Path, tmp_path: Path
) -> None:
    request = tmp_path / "request.txt"
    request.write_text("please launch the rocket")
    submitted = claimcheck(
        "submit",
        "launch_rocket",
        "--to",
        "triage",
        "--input",
        str(request),
        state_dir=running_stack,
    )
    workflow_id = submitted.stdout.strip()
    events = wait_for_event(running_stack, workflow_id, "WorkflowFailed")
    assert "no task 'launch_rocket'" in events[-2]["data"]["reason"]


def test_bad_input_to_the_cli_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    unknown = claimcheck("events", "00000000-0000-0000-0000-000000000000", state_dir=tmp_path)
    missing = claimcheck(
        "submit", "t", "--to", "triage", "--input", str(tmp_path / "nope"), state_dir=tmp_path
    )
    for result in (unknown, missing):
        assert result.returncode == 1
        assert "Traceback" not in result.stdout + result.stderr
    assert "no workflow" in unknown.stdout
    assert "cannot read" in missing.stdout


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_a_human_answers_the_escalated_complaint(
    running_stack: Path, tmp_path: Path, mailbox: Mailbox, decision: str
) -> None:
    workflow_id = submit_press_complaint(running_stack, tmp_path)
    escalation = open_escalation(running_stack, workflow_id)
    assert escalation["kind"] == "permission_denied"
    shown = claimcheck("escalations", "show", escalation["escalationId"], state_dir=running_stack)
    assert "press@pr-agency.example" in shown.stdout
    assert mailbox.received == []

    answered = claimcheck(
        "escalations",
        decision,
        escalation["escalationId"],
        "--as",
        "dana",
        "--reason",
        "checked with legal",
        state_dir=running_stack,
    )
    assert answered.returncode == 0, answered.stdout + answered.stderr
    if decision == "approve":
        events = wait_for_event(running_stack, workflow_id, "WorkflowCompleted")
        assert [m["To"] for m in mailbox.received] == ["press@pr-agency.example"]
    else:
        events = wait_for_event(running_stack, workflow_id, "WorkflowFailed")
        assert "dana denied permission_denied: checked with legal" in events[-1]["data"]["reason"]
        assert mailbox.received == []
    resolved = [e for e in events if e["type"] == "EscalationResolved"]
    assert resolved[0]["data"]["resolution"]["approver"] == "dana"
    again = claimcheck(
        "escalations", decision, escalation["escalationId"], "--as", "dana", state_dir=running_stack
    )
    assert again.returncode == 1 and "already resolved" in again.stdout
    assert (
        claimcheck("escalations", "list", "--json", state_dir=running_stack).stdout.strip() == "[]"
    )


def test_a_bad_policy_file_stops_the_runtime_at_start_up(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rules]]\nname = "emails"\naction = "send_email"\neffect = "permit"\n')
    result = subprocess.run(
        [*CLI, "runtime", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "CLAIMCHECK_POLICY": str(policy), "COLUMNS": "300"},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert f"{policy}: rule 1 ('emails'), field 'effect'" in result.stdout


def test_the_benchmark_writes_every_figure_beside_its_baseline(tmp_path: Path) -> None:
    """Only the shape of what it reports: speed is judged from `claimcheck bench`, not in tests.
    An earlier run to compare with claims a ratio no run reaches, so that row is called out."""
    out = tmp_path / "bench.json"
    earlier = tmp_path / "earlier.json"
    impossible = {"path": "governed step (checkpoint)", "in_flight": 1, "ratio": 1000.0}
    earlier.write_text(json.dumps({"rows": [{**impossible, "baseline": "eventsourcing append"}]}))
    result = subprocess.run(
        [
            *CLI,
            "bench",
            "--count",
            "20",
            "--workflows",
            "3",
            "--steps",
            "1",
            "--ledger-events",
            "500",
            "--json",
            str(out),
            "--compare",
            str(earlier),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"worse than {earlier} by more than noise: 1 of" in result.stdout
    assert "governed step (checkpoint), 1 in flight:" in result.stdout
    assert "against 1000.00" in result.stdout
    assert "whole workflows (SQLite), 16 in flight" in result.stderr  # progress, as it goes
    rows = json.loads(out.read_text())["rows"]
    paths = {(row["path"], row["in_flight"]) for row in rows}
    for in_flight in (1, 16, 64):
        assert ("governed step (checkpoint)", in_flight) in paths
        assert ("runtime read (state)", in_flight) in paths
    for in_flight in (1, 16, 200):
        assert ("whole workflows, 1 tool steps (SQLite)", in_flight) in paths
    assert {"tool step latency p50", "handoff end to end", "relay publish (per event)"} <= {
        path for path, _ in paths
    }
    assert ("one workflow's steps at 5,000 steps of history", 1) in paths
    by_size = [row["detail"] for row in rows if "ledger_events" in row["detail"]]
    assert [size["ledger_events"] for size in by_size] == [1_000, 10_000, 100_000]
    assert by_size[-1]["open_workflows"] == 10_000
    assert all(size["p99_ms"] > 0 and size["runtime_rss_mb"] > 0 for size in by_size)
    assert "runtime RSS" in result.stdout  # the table by ledger size
    reads = {row["path"]: row for row in rows if row["path"].endswith("events)")}
    assert {path.split(" (")[0] for path in reads} == {"verify --offline", "views rebuild"}
    for row in reads.values():  # each read's own process: its peak memory beside the baseline's
        assert row["detail"]["events"] >= 500 and row["detail"]["peak_mb"] > 0, row
    for row in rows:
        assert set(row) >= {"value", "baseline", "baseline_value", "ratio", "bound", "unit"}
        assert row["bound"], row
        if row["path"].startswith("whole workflows"):
            assert row["detail"]["not_completed"] == 0, row
            assert set(row["detail"]["cpu"]) >= {"runtime", "tools", "agent-bench", "nats-server"}
            assert set(row["detail"]["machine"]) == {"busy_cores", "disk_wait_cores"}
            # a tool step stores at least its journal claim and result, and its events
            assert row["detail"]["jetstream_writes_per_step"] >= 3, row
        elif row["baseline_value"] is not None:
            assert row["ratio"] == pytest.approx(row["value"] / row["baseline_value"])


def test_errors_are_a_line_or_two_with_secrets_redacted(tmp_path: Path) -> None:
    version = claimcheck("--version")
    assert version.returncode == 0 and version.stdout.startswith("claimcheck ")

    nowhere = {"CLAIMCHECK_LEDGER": "postgresql://bob:hunter2@127.0.0.1:1/ledger"}
    wrong_ledger = claimcheck("status", state_dir=tmp_path, env=nowhere, timeout=30)
    said = wrong_ledger.stdout + wrong_ledger.stderr
    assert wrong_ledger.returncode == 1
    assert "cannot open the ledger at postgresql://bob:***@127.0.0.1:1/ledger" in said
    assert "hunter2" not in said and "Traceback" not in said

    a_file = tmp_path / "schemas.json"
    a_file.write_text("{}")
    for bad in (["schemas", "export", str(a_file)], ["bench", "--count", "0"]):
        result = claimcheck(*bad)
        assert result.returncode != 0, bad
        assert "Traceback" not in result.stdout + result.stderr, bad
