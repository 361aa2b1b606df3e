"""``claimcheck up`` starts the console beside the stack and prints its URL; Ctrl-C (SIGTERM)
stops both cleanly; a taken console port is a message, and the stack runs on without it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

from bus.operations.mailbox import Mailbox
from tests.conftest import CLI


def start_up(state_dir: Path, mailbox: Mailbox, ui_port: int) -> tuple[subprocess.Popen, list]:
    up = subprocess.Popen(
        [*CLI, "up", "--state-dir", str(state_dir), "--ui-port", str(ui_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "CLAIMCHECK_SMTP_PORT": str(mailbox.port), "COLUMNS": "400"},
    )
    assert up.stdout is not None
    said = []
    for line in up.stdout:
        said.append(line)
        if "claimcheck console at" in line or "web console cannot listen" in line:
            return up, said
    raise AssertionError(f"claimcheck up exited with {up.wait()}: {''.join(said)}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_up_serves_the_console_and_stops_it_with_the_stack(
    tmp_path: Path, mailbox: Mailbox
) -> None:
    port = free_port()
    up, said = start_up(tmp_path / "state", mailbox, port)
    try:
        assert said[-1].strip() == f"claimcheck console at http://127.0.0.1:{port}/"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/workflows", timeout=10) as r:
            listed = json.loads(r.read())
        assert listed["stackUp"] is True and listed["total"] == 0
        # a browser still listening must not hold the stop up
        live = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/live", timeout=10)
        assert live.readline().startswith(b"event: hello")
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=30) == 0
    live.close()


def test_a_taken_console_port_is_a_message_and_the_stack_runs_on(
    tmp_path: Path, mailbox: Mailbox
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        up, said = start_up(tmp_path / "state", mailbox, port)
        try:
            assert f"the web console cannot listen on port {port}" in said[-1]
            assert up.poll() is None  # the stack is still up
        finally:
            up.send_signal(signal.SIGTERM)
            assert up.wait(timeout=30) == 0
