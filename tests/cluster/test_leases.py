"""Runtime replicas divide the relay's and the views' work: one holds each job's lease and
does it (publishes the ledger's events, applies the views), the other stands by, and takes
over within seconds when the holder is SIGKILLed.

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
from bus.ledger.view_runner import VIEWS_JOB, open_views
from bus.operations.mailbox import Mailbox
from bus.operations.operators import submit
from bus.operations.stack import Stack
from bus.settings import Settings
from bus.transport.connection import connect
from bus.transport.lease import LEASE_SECONDS
from bus.transport.subjects import Subjects
from projections.views import ViewStore

pytestmark = pytest.mark.timeout(180)
SUBJECTS = Subjects("cc")


async def lease_holder(js: JetStreamContext, job: str) -> int:
    """The pid of the process holding a job's lease (its identity is host-pid-nonce)."""
    kv = await js.key_value(SUBJECTS.lease_bucket)
    entry = await kv.get(job)
    assert entry.value is not None
    return int(entry.value.decode().rsplit("-", 2)[1])


async def relayed(js: JetStreamContext, views: ViewStore, workflow_id: str) -> bool:
    """Whether the workflow's first event is on the events stream."""
    subject = SUBJECTS.event(workflow_id, "WorkflowStarted")
    try:
        await js.get_last_msg(SUBJECTS.stream("events"), subject)
    except NotFoundError:
        return False
    return True


async def in_views(js: JetStreamContext, views: ViewStore, workflow_id: str) -> bool:
    """Whether the views list the workflow."""
    sql = "SELECT 1 FROM cc_workflows WHERE workflow_id = ?"
    return bool(views.query(sql, (workflow_id,)))


JOBS = {
    RELAY_JOB: (relayed, "relay resumes"),
    VIEWS_JOB: (in_views, "views resume"),
}


async def done_within(
    job: str, js: JetStreamContext, views: ViewStore, workflow_id: str, timeout: float
) -> float:
    """Seconds until the job has done its work for the workflow."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await JOBS[job][0](js, views, workflow_id):
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"{job} did not reach {workflow_id} within {timeout} s")


def log_of(stack: Stack, name: str) -> str:
    return (stack.settings.state_dir / "logs" / f"{name}.log").read_text()


@pytest.mark.parametrize("job", JOBS)
async def test_one_replica_does_the_job_and_a_standby_takes_over_when_it_is_killed(
    tmp_path: Path, mailbox: Mailbox, job: str
) -> None:
    resumes = JOBS[job][1]
    settings = Settings(state_dir=tmp_path / "state", smtp_port=mailbox.port)
    async with Stack(settings, agents=(), extra_roles=("agent-triage",), runtimes=2) as stack:
        operator = await connect(settings, "operator")
        observer = settings.model_copy(update={"credentials": stack.credentials["runtime"]})
        nc = await connect(observer, "observer")
        js = nc.jetstream()
        views = open_views(settings, create=False)
        try:
            first = await submit(operator, SUBJECTS, "triage_complaint", "triage", b"{}")
            await done_within(job, js, views, first.workflow_id, 10)
            pids = {process.pid: name for name, process in stack.processes.items()}
            holder = pids[await lease_holder(js, job)]
            [standby] = [name for name in ("runtime", "runtime-2") if name != holder]
            assert resumes in log_of(stack, holder)
            assert resumes not in log_of(stack, standby)  # it stood by

            await stack.kill(holder)
            killed = time.monotonic()
            second = await submit(operator, SUBJECTS, "triage_complaint", "triage", b"{}")
            await done_within(job, js, views, second.workflow_id, LEASE_SECONDS + 10)
            took = time.monotonic() - killed
            print(f"{job} done {took:.2f} s after the holder was killed")
            assert took < LEASE_SECONDS + 3, took  # within seconds, not never
            assert pids[await lease_holder(js, job)] == standby
            assert f"took the lease on {job}" in log_of(stack, standby)
        finally:
            await nc.close()
            await operator.close()
