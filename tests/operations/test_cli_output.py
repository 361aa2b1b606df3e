"""What the command line prints: camelCase in every ``--json``, ``status`` filters and times,
and how each escalation was answered."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bus.operations.cli.output import age, parse_since, wire_keys
from bus.settings import Settings
from tests.conftest import claimcheck

SNAKE = re.compile(r"^[a-z]+(_[a-z0-9]+)+$")
AS_WRITTEN = {"output", "payload", "data", "facts", "refs", "result", "checkpoints"}


def snake_keys(value: Any, path: str = "$") -> list[str]:
    """Every snake_case key in ``value``, outside what users wrote as is."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if SNAKE.match(key):
                found.append(f"{path}.{key}")
            if key not in AS_WRITTEN and key != "checkpointEvidence":
                found += snake_keys(item, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            found += snake_keys(item, path)
    return found


def json_of(*args: str, state_dir: Path) -> Any:
    result = claimcheck(*args, "--json", state_dir=state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


async def test_every_json_output_is_camel_case_and_status_filters(
    demo_stack: tuple[Settings, list],
) -> None:
    settings, views = demo_stack
    state_dir = settings.state_dir
    escalated = views[2].workflow_id
    outputs = {
        "status": json_of("status", state_dir=state_dir),
        "claims": json_of("claims", state_dir=state_dir),
        "events": json_of("events", views[0].workflow_id, state_dir=state_dir),
        "escalations": json_of("escalations", "list", "--all", state_dir=state_dir),
    }
    for command, output in outputs.items():
        assert output, command
        assert snake_keys(output) == [], command
    started = outputs["events"][0]["data"]
    assert {"budgetUsd", "startedBy", "artifactId"} <= set(started)
    [row] = [row for row in outputs["status"] if row["workflowId"] == escalated]
    assert {"startedAt", "updatedAt", "ageSeconds", "idleSeconds", "agent"} <= set(row)
    assert row["ageSeconds"] >= 0 and row["startedAt"] <= row["updatedAt"]

    def listed(*filters: str) -> list[str]:
        return [row["workflowId"] for row in json_of("status", *filters, state_dir=state_dir)]

    assert listed("--status", "escalated") == [escalated]
    assert listed("--status", "completed") == [views[0].workflow_id, views[1].workflow_id]
    assert listed("--agent", "notifier", "--status", "escalated") == [escalated]
    assert listed("--task", "triage_complaint", "--since", "10m") == [v.workflow_id for v in views]
    assert listed("--task", "no_such_task") == []
    assert listed("--since", (datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []
    text = claimcheck("status", "--status", "escalated", state_dir=state_dir).stdout
    assert escalated in text and "age " in text and "updated " in text
    assert "no workflow matches" in claimcheck("status", "--agent", "x", state_dir=state_dir).stdout

    for bad, said in (
        (("--since", "yesterday"), "neither a time ago"),
        (("--status", "done"), "is not a status"),
    ):
        result = claimcheck("status", *bad, state_dir=state_dir)
        assert result.returncode == 1 and said in result.stdout, result.stdout
        assert "Traceback" not in result.stdout + result.stderr


async def test_escalations_list_all_says_how_each_was_answered(
    demo_stack: tuple[Settings, list],
) -> None:
    settings, views = demo_stack
    escalation_id = views[2].escalations[0]["escalationId"]
    before = claimcheck("escalations", "list", "--all", state_dir=settings.state_dir).stdout
    assert f"{escalation_id} " in before and before.rstrip().endswith("-> open")
    answered = claimcheck(
        "escalations",
        "deny",
        escalation_id,
        "--as",
        "dana",
        "--reason",
        "no statements",
        state_dir=settings.state_dir,
    )
    assert answered.returncode == 0, answered.stdout + answered.stderr
    assert (
        "no open escalations"
        in claimcheck("escalations", "list", state_dir=settings.state_dir).stdout
    )
    after = claimcheck("escalations", "list", "--all", state_dir=settings.state_dir).stdout
    assert re.search(rf"{escalation_id} .* -> denied by dana at 20\S+: no statements", after)
    [listed] = json.loads(
        claimcheck("escalations", "list", "--all", "--json", state_dir=settings.state_dir).stdout
    )
    assert listed["resolution"]["decision"] == "deny"
    assert listed["resolution"]["approver"] == "dana"


def test_wire_keys_rename_fields_but_not_what_users_wrote() -> None:
    event = {"step_key": "s/1", "payload": {"to_address": "x"}, "decision": {"max_attempts": 3}}
    assert wire_keys(event) == {
        "stepKey": "s/1",
        "payload": {"to_address": "x"},
        "decision": {"maxAttempts": 3},
    }


@pytest.mark.parametrize(
    ("text", "ago"),
    [("90s", timedelta(seconds=90)), ("15m", timedelta(minutes=15)), ("2h", timedelta(hours=2))],
)
def test_since_takes_a_time_ago(text: str, ago: timedelta) -> None:
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    assert parse_since(text, now) == now - ago


def test_since_takes_an_iso_time_and_refuses_anything_else() -> None:
    assert parse_since("2026-11-25") == datetime(2026, 11, 25, tzinfo=UTC)
    with pytest.raises(ValueError, match="neither a time ago"):
        parse_since("last week")


def test_ages_read_like_a_person_says_them() -> None:
    assert [age(s) for s in (4, 185, 7800, 273600)] == ["4s", "3m05s", "2h10m", "3d04h"]
