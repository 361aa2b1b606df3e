"""What a whole-workflow row says bounded it, from the CPU of its processes and the machine.

On two cores, past three quarters busy every process waits its turn for a core; the disk
is named only when the machine sat idle waiting on it; a process that kept a core busy is
named; otherwise the requests' chain of round trips.
"""

from __future__ import annotations

import pytest

from bus.operations.bench import workflows
from bus.operations.bench.workflows import Busy

SHARES = {"runtime": 0.77, "tools": 0.28, "nats-server": 0.4}


@pytest.fixture(autouse=True)
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workflows, "cores", lambda: 2)


@pytest.mark.parametrize(
    ("shares", "machine", "says"),
    [
        (SHARES, {"busy_cores": 1.6, "disk_wait_cores": 0.06}, "CPU: 1.6 of 2 cores busy"),
        ({"runtime": 0.95}, {"busy_cores": 1.1, "disk_wait_cores": 0.0}, "CPU of runtime (95%"),
        (SHARES, {"busy_cores": 1.1, "disk_wait_cores": 0.5}, "fsync: JetStream (4,000"),
        (SHARES, {"busy_cores": 1.1, "disk_wait_cores": 0.05}, "round trips"),
    ],
)
def test_the_bound_names_what_the_machine_was_doing(
    shares: dict[str, float], machine: dict[str, float], says: str
) -> None:
    bound = Busy.bound(shares, 4000, machine)
    assert bound.startswith(says), bound
    assert "waiting on the disk" in bound or bound.startswith("CPU of")


def test_the_machine_is_read_from_proc() -> None:
    busy, disk, ticks = workflows.machine_ticks()
    assert 0 <= busy <= ticks and 0 <= disk <= ticks
