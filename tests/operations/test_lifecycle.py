"""One stack per state directory, stopped by ``claimcheck down``, and no orphans.

A second ``up`` or ``demo`` on a state directory in use is refused with what to do;
``down`` stops the stack; a stack killed with SIGKILL takes its children with it; a
taken port is a clear message.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from bus.operations.mailbox import Mailbox
from tests.conftest import CLI, claimcheck


def start_up(state_dir: Path, mailbox: Mailbox) -> subprocess.Popen[str]:
    up = subprocess.Popen(
        [*CLI, "up", "--state-dir", str(state_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "CLAIMCHECK_SMTP_PORT": str(mailbox.port)},
    )
    assert up.stdout is not None
    for line in up.stdout:
        if "claimcheck is up" in line:
            return up
    raise AssertionError(f"claimcheck up exited with {up.wait()}")


def children_of(pid: int) -> set[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return {int(child) for child in found.split()}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's reaping is left


def test_a_second_stack_is_refused_and_down_stops_the_first(
    tmp_path: Path, mailbox: Mailbox
) -> None:
    state_dir = tmp_path / "state"
    up = start_up(state_dir, mailbox)
    try:
        for second in (["up"], ["demo"]):
            refused = claimcheck(*second, state_dir=state_dir)
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert "already runs" in refused.stdout and "Traceback" not in refused.stdout
            assert f"claimcheck down --state-dir {state_dir}" in refused.stdout.replace("\n", "")
        assert (state_dir / "nats.url").exists()  # the refused ones left the first one's files

        stopped = claimcheck("down", state_dir=state_dir)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert f"stopped the stack (pid {up.pid})" in stopped.stdout
        assert up.wait(timeout=5) == 0
    finally:
        up.kill()
    assert claimcheck("down", state_dir=state_dir).stdout.startswith("no stack runs")


def test_a_killed_stack_takes_its_processes_with_it(tmp_path: Path, mailbox: Mailbox) -> None:
    state_dir = tmp_path / "state"
    up = start_up(state_dir, mailbox)
    children = children_of(up.pid)
    assert len(children) >= 5  # nats-server, runtime, tool host, two agents
    up.send_signal(signal.SIGKILL)
    up.wait()
    deadline = time.monotonic() + 15
    while (left := {pid for pid in children if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"orphans: {left}"
    again = start_up(state_dir, mailbox)  # the lock died with the killed stack
    again.send_signal(signal.SIGTERM)
    assert again.wait(timeout=30) == 0


def test_a_taken_port_is_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = claimcheck(
            "up", state_dir=tmp_path / "state", env={"CLAIMCHECK_NATS_PORT": str(port)}
        )
    assert result.returncode == 1
    assert f"port {port} is in use" in result.stdout.replace("\n", " ")
    assert "Traceback" not in result.stdout + result.stderr
