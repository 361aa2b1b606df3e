"""A project of one's own: ``claimcheck new`` scaffolds one whose own test passes, ``claimcheck
up`` runs what its ``claimcheck.toml`` lists (credentials made for each role and found without
variables), ``--reload`` restarts its code processes on a change, and a bad project file is a
clear message. Real processes throughout."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.operations.project import EXAMPLE, ProjectError, find_project
from bus.runtime.catalogue import Catalogue
from bus.settings import Settings
from bus.tools import send_email
from bus.transport.auth import ensure_credentials
from tests.conftest import CLI, claimcheck
from tests.operations.test_lifecycle import alive
from tests.tools.test_sdk import SCRIPT

REPO = Path(__file__).resolve().parents[2]
NOTES = Catalogue("notes", [dataclasses.replace(send_email, name="send_note")])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh ``claimcheck new`` project."""
    made = claimcheck("new", str(tmp_path / "hello-bot"))
    assert made.returncode == 0, made.stdout + made.stderr
    return tmp_path / "hello-bot"


def test_new_scaffolds_a_project_whose_own_test_passes(project: Path) -> None:
    assert {p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()} == {
        "claimcheck.toml",
        "policy.toml",
        "README.md",
        "greeting.json",
        "hello_bot/__init__.py",
        "hello_bot/agents.py",
        "hello_bot/tools.py",
        "tests/test_project.py",
    }
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=180,
        env={k: v for k, v in os.environ.items() if not k.startswith("CLAIMCHECK_")},
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "1 passed" in ran.stdout


def test_new_refuses_a_directory_in_use(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    refused = claimcheck("new", str(tmp_path / "taken"))
    assert refused.returncode == 1
    assert "exists and is not an empty directory" in refused.stdout
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


@pytest.fixture
def project_up(project: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """``claimcheck up --reload`` in the project's directory; its output lines, as they come."""
    state_dir = tmp_path / "state"
    up = subprocess.Popen(
        [*CLI, "up", "--reload", "--ui-port", "0", "--state-dir", str(state_dir)],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "400"},
    )
    try:
        yield up, state_dir
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0


def read_until(up: subprocess.Popen[str], pattern: str, timeout: float = 60) -> re.Match[str]:
    assert up.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    for line in up.stdout:
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found
        assert time.monotonic() < deadline, "".join(seen)
    raise AssertionError(f"claimcheck up exited with {up.wait()}:\n{''.join(seen)}")


def test_up_runs_the_project_and_reload_restarts_its_agent_on_a_change(
    project: Path, project_up: tuple[subprocess.Popen[str], Path]
) -> None:
    up, state_dir = project_up
    read_until(up, "claimcheck is up")
    assert read_until(up, r"processes: (.*);").group(1) == "runtime, tools, agent-greeter"
    before = int(read_until(up, r"agent-greeter \(pid (\d+)\)").group(1))

    # the project's workflow runs on what claimcheck.toml lists
    submitted = claimcheck(
        "submit", "greet", "--to", "greeter", "--input", "greeting.json",
        state_dir=state_dir, cwd=project,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    workflow = submitted.stdout.strip()
    deadline = time.monotonic() + 30
    while '"completed"' not in claimcheck("status", workflow, "--json", state_dir=state_dir).stdout:
        assert time.monotonic() < deadline, "the project's workflow did not complete"
        time.sleep(0.3)

    agents = project / "hello_bot" / "agents.py"
    agents.write_text(agents.read_text() + "\n# edited\n")
    after = int(read_until(up, r"reloaded .*agent-greeter \(pid (\d+)\)").group(1))
    assert after != before
    assert alive(after)
    deadline = time.monotonic() + 10
    while alive(before):
        assert time.monotonic() < deadline, "the old agent process still runs"
        time.sleep(0.1)


def test_an_agent_run_by_hand_joins_the_stack_with_the_credentials_up_made(
    project: Path, project_up: tuple[subprocess.Popen[str], Path], tmp_path: Path
) -> None:
    """No CLAIMCHECK_CREDENTIALS, no PYTHONPATH: the agent's module is found in the current
    directory and its credentials in the state directory."""
    up, state_dir = project_up
    read_until(up, "claimcheck is up")
    log = tmp_path / "by-hand.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CLAIMCHECK_")}
    with log.open("w") as out:
        by_hand = subprocess.Popen(
            [SCRIPT, "agent", "run", "hello_bot.agents:greeter", "--state-dir", str(state_dir)],
            cwd=project,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    try:
        deadline = time.monotonic() + 30
        while "agent greeter consuming" not in log.read_text():
            assert by_hand.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        time.sleep(1.0)
        assert "Authorization" not in log.read_text()
    finally:
        by_hand.send_signal(signal.SIGTERM)
        assert by_hand.wait(timeout=15) == 0, log.read_text()


def test_a_bad_project_file_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "claimcheck.toml").write_text('[[agents]]\ntarget = "not a target"\n')
    for command in (["up", "--ui-port", "0"], ["tools", "serve"]):
        refused = claimcheck(*command, state_dir=tmp_path / "state", cwd=tmp_path)
        assert refused.returncode == 1
        assert "claimcheck.toml: agents.0.target" in refused.stdout, refused.stdout
        assert "Traceback" not in refused.stdout + refused.stderr
    (tmp_path / "claimcheck.toml").write_text("tools = [\n")
    with pytest.raises(ProjectError, match="cannot read"):
        find_project(tmp_path)


def test_the_project_file_gives_settings_the_environment_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "claimcheck.toml").write_text(
        'policy = "mine.toml"\nledger = "sqlite:///project.db"\ntools = ["x:y"]\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLAIMCHECK_POLICY", raising=False)
    monkeypatch.delenv("CLAIMCHECK_LEDGER", raising=False)
    assert (Settings().policy, Settings().ledger) == (Path("mine.toml"), "sqlite:///project.db")
    monkeypatch.setenv("CLAIMCHECK_LEDGER", "sqlite:///from-env.db")
    assert Settings().ledger == "sqlite:///from-env.db"
    assert find_project(tmp_path).tools == ["x:y"]


def test_the_demo_is_a_project_file_too() -> None:
    """``examples/complaints/claimcheck.toml`` lists what runs without a project file."""
    demo = find_project(REPO / "examples" / "complaints")
    assert (demo.agents, demo.tools) == (EXAMPLE.agents, EXAMPLE.tools)


def test_an_agent_the_stack_has_no_credentials_for_is_told_what_to_do(project: Path) -> None:
    state_dir = project / ".claimcheck"
    ensure_credentials(state_dir / "credentials", ["cli", "runtime"])  # `up`'s, not this agent's
    refused = subprocess.run(
        [SCRIPT, "agent", "run", "hello_bot.agents:greeter", "--state-dir", str(state_dir)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert refused.returncode == 1
    assert "agent 'greeter' has no credentials" in refused.stdout
    assert "list hello_bot.agents:greeter in claimcheck.toml" in refused.stdout
    (project / "claimcheck.toml").write_text("tools = []\n")
    served = claimcheck("tools", "serve", state_dir=state_dir, cwd=project)
    assert served.returncode == 1 and "no tool catalogues" in served.stdout


def test_the_stack_runs_each_agents_replicas_and_a_host_per_catalogue(tmp_path: Path) -> None:
    from bus.operations.project import AgentEntry, Project
    from bus.operations.stack import Stack

    project = Project(
        agents=[
            AgentEntry(target="agents.complaints:triage", replicas=2),
            AgentEntry(target="agents.complaints:notifier"),
        ],
        tools=["bus.tools:complaints", "tests.operations.test_project:NOTES"],
    )
    commands = Stack.for_project(Settings(state_dir=tmp_path), project).commands()
    assert {name: role for name, (role, _) in commands.items()} == {
        "runtime": "runtime",
        "tools-complaints": "tools",
        "tools-notes": "tools",
        "agent-triage": "agent-triage",
        "agent-triage-2": "agent-triage",
        "agent-notifier": "agent-notifier",
    }
    serve = ["tools", "serve", "tests.operations.test_project:NOTES"]
    assert commands["tools-notes"][1][-3:] == serve
