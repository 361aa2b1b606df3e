"""`claimcheck bench --compare`: each ratio beside an earlier run's, and the drops called out."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bus.operations.bench import Measurement
from bus.operations.bench.report import (
    NotABenchRun,
    earlier_ratios,
    regressions,
    table,
    worse,
    write_json,
)
from tests.conftest import CLI


def steps(value: float, baseline: float, in_flight: int = 200) -> Measurement:
    return Measurement("whole workflows", in_flight, value, "Temporal", baseline, "fsync")


def latency(value: float, baseline: float) -> Measurement:
    return Measurement("tool step latency p50", 1, value, "round trip", baseline, "fsync", "ms")


def test_a_drop_beyond_noise_is_worse_in_the_direction_of_the_unit() -> None:
    assert worse(steps(92, 54), earlier=4.2)  # the two-runtime regression: 1.7 against 4.2
    assert not worse(steps(300, 54), earlier=6.2)  # 5.6 against 6.2: within noise
    assert not worse(steps(500, 54), earlier=6.2)  # better
    assert worse(latency(8.0, 1.0), earlier=6.0)  # a latency: a higher ratio is worse
    assert not worse(latency(4.0, 1.0), earlier=6.0)
    assert not worse(steps(92, 54), earlier=None)  # a row the earlier run did not have
    assert not worse(steps(92, 0), earlier=4.2)  # no baseline this time: no ratio


def test_an_earlier_run_is_read_back_from_its_json(tmp_path: Path) -> None:
    earlier = tmp_path / "earlier.json"
    write_json(earlier, [steps(420, 100), latency(5.0, 1.0), steps(99, 0, in_flight=1)])
    ratios = earlier_ratios(earlier)
    assert ratios == {
        ("whole workflows", 200, "Temporal"): 4.2,
        ("tool step latency p50", 1, "round trip"): 5.0,
    }  # a row without a ratio has nothing to compare with
    now = [steps(170, 100), latency(5.5, 1.0), steps(99, 0, in_flight=1)]
    assert regressions(now, ratios) == ["whole workflows, 200 in flight: 1.70 against 4.20"]
    columns = [column.header for column in table(now, ratios).columns]
    assert columns[6] == "earlier"
    assert list(table(now, ratios).columns[6].cells) == ["4.20 worse", "5.00", "-"]


@pytest.mark.parametrize("content", ["", "[]", '{"rows": 3}', '{"rows": [{"path": "x"}]}'])
def test_a_file_that_is_not_a_bench_run_is_refused(tmp_path: Path, content: str) -> None:
    earlier = tmp_path / "earlier.json"
    earlier.write_text(content)
    with pytest.raises(NotABenchRun, match="not a `claimcheck bench --json` file"):
        earlier_ratios(earlier)


def test_the_command_refuses_a_bad_file_before_measuring(tmp_path: Path) -> None:
    """A run takes minutes: a wrong --compare path is said at once, not at the end."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not json")
    for given in (tmp_path / "missing.json", notes):
        result = subprocess.run(
            [*CLI, "bench", "--compare", str(given)],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "COLUMNS": "300"},
        )
        assert result.returncode == 1
        assert "Traceback" not in result.stdout + result.stderr
        assert f"{given}: not a `claimcheck bench --json` file" in result.stdout
        assert "in flight" not in result.stderr  # no measuring started
