"""A dead process is noticed in seconds, and a live one stops in seconds.

The handoff of a SIGKILLed agent is taken up again within about 15 s with the
default ack wait; every service stops on SIGTERM or SIGINT within a few seconds
even while NATS is unreachable, and logs the lost connection a bounded number
of times.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bus.ledger.setup import init_ledger
from bus.ledger.view_runner import open_views
from bus.operations.services import STOP_GRACE_SECONDS
from bus.settings import Settings
from bus.transport.server import free_port
from tests.conftest import CLI
from tests.failures.test_faults import faults_stack

SERVICES = {
    "runtime": ["runtime"],
    "tool host": ["tools", "serve"],
    "agent": ["agent", "run", "agents.complaints:triage"],
}


@pytest.mark.parametrize(
    ("service", "signum"),
    [*((name, signal.SIGTERM) for name in SERVICES), ("agent", signal.SIGINT)],
)
def test_a_service_stops_within_seconds_while_nats_is_unreachable(
    tmp_path: Path, service: str, signum: signal.Signals
) -> None:
    nowhere = f"nats://127.0.0.1:{free_port()}"  # nothing listens: the client keeps retrying
    settings = Settings(state_dir=tmp_path, nats_url=nowhere)
    init_ledger(settings.ledger_url(), lambda: open_views(settings))  # the runtime checks it
    log = tmp_path / "service.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [*CLI, *SERVICES[service], "--state-dir", str(tmp_path)],
            env={**os.environ, "CLAIMCHECK_NATS_URL": nowhere},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_line(log, "NATS", process)  # it is in its reconnect loop now
        time.sleep(3)  # fifteen more attempts at 0.2 s
        asked = time.monotonic()
        process.send_signal(signum)
        process.wait(timeout=STOP_GRACE_SECONDS + 10)
        took = time.monotonic() - asked
    finally:
        process.kill()
    said = log.read_text()
    assert took < STOP_GRACE_SECONDS + 3, said
    assert process.returncode in (0, -signum), said
    assert 1 <= sum("NATS" in line for line in said.splitlines()) <= 3, said  # not one per retry


def wait_for_line(log: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while text not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


async def test_the_handoff_of_a_killed_agent_is_taken_up_again_within_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ack_wait = Settings.model_fields["inbox_ack_wait"].default
    monkeypatch.setenv("CLAIMCHECK_INBOX_ACK_WAIT", str(ack_wait))  # the product's default
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    async with faults_stack(tmp_path, ledger_url, monkeypatch) as faults:
        faults.hold("after-email")
        workflow_id = await faults.submit()
        await faults.reached("after-email")
        await asyncio.sleep(ack_wait)  # past one ack wait: only the heartbeats kept it
        await faults.stack.kill("agent-mailer")
        killed = time.monotonic()
        faults.release("after-email")
        await faults.stack.start_process("agent-mailer")
        view = await faults.outcome(workflow_id, timeout=30)
        taken_up = time.monotonic() - killed
    assert view.status == "completed"
    assert len(faults.mailbox.received) == 1
    assert taken_up < 15, f"the killed agent's handoff waited {taken_up:.1f}s"
