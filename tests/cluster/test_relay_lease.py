"""Relay replicas divide the work: one holds the relay's lease and publishes, the other
stands by, and takes over within seconds when the holder is SIGKILLed.

Two real runtime processes share one ledger and one nats-server (the embedded stack with
two runtimes); the lease is a key of a JetStream key-value bucket with a TTL.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bus.ledger.relay import RELAY_JOB
from bus.operations.mailbox import Mailbox
from bus.operations.operators import submit
from bus.operations.stack import Stack
from bus.settings import Settings
from bus.transport.connection import connect
from bus.transport.lease import LEASE_SECONDS
from bus.transport.subjects import Subjects

pytestmark = pytest.mark.timeout(180)
SUBJECTS = Subjects("cc")


async def lease_holder(js: JetStreamContext) -> int:
    """The pid of the process holding the relay's lease (its identity is host-pid-nonce)."""
    kv = await js.key_value(SUBJECTS.lease_bucket)
    entry = await kv.get(RELAY_JOB)
    assert entry.value is not None
    return int(entry.value.decode().rsplit("-", 2)[1])


async def relayed(js: JetStreamContext, workflow_id: str, timeout: float) -> float:
    """Seconds until the workflow's first event is on the events stream."""
    started = time.monotonic()
    subject = SUBJECTS.event(workflow_id, "WorkflowStarted")
    while time.monotonic() - started < timeout:
        try:
            await js.get_last_msg(SUBJECTS.stream("events"), subject)
            return time.monotonic() - started
        except NotFoundError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"{workflow_id} was not relayed within {timeout} s")


def log_of(stack: Stack, name: str) -> str:
    return (stack.settings.state_dir / "logs" / f"{name}.log").read_text()


async def test_one_relay_publishes_and_a_standby_takes_over_when_it_is_killed(
    tmp_path: Path, mailbox: Mailbox
) -> None:
    settings = Settings(state_dir=tmp_path / "state", smtp_port=mailbox.port)
    async with Stack(settings, agents=(), extra_roles=("agent-triage",), runtimes=2) as stack:
        operator = await connect(settings, "operator")
        observer = settings.model_copy(update={"credentials": stack.credentials["runtime"]})
        nc = await connect(observer, "observer")
        js = nc.jetstream()
        try:
            first = await submit(operator, SUBJECTS, "triage_complaint", "triage", b"{}")
            await relayed(js, first.workflow_id, 10)
            pids = {process.pid: name for name, process in stack.processes.items()}
            holder = pids[await lease_holder(js)]
            [standby] = [name for name in ("runtime", "runtime-2") if name != holder]
            assert "relay resumes" in log_of(stack, holder)
            assert "relay resumes" not in log_of(stack, standby)  # it stood by

            await stack.kill(holder)
            killed = time.monotonic()
            second = await submit(operator, SUBJECTS, "triage_complaint", "triage", b"{}")
            await relayed(js, second.workflow_id, LEASE_SECONDS + 10)
            took = time.monotonic() - killed
            print(f"relayed {took:.2f} s after the holder was killed")
            assert took < LEASE_SECONDS + 3, took  # within seconds, not never
            assert pids[await lease_holder(js)] == standby
            assert "took the lease" in log_of(stack, standby)
        finally:
            await nc.close()
            await operator.close()
