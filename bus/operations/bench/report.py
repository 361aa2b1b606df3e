"""The bench's results as a table for people and as JSON for comparing commits."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from bus.operations.bench import Measurement, cores


def figure(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f} ms" if unit == "ms" else f"{value:,.0f}"


RowKey = tuple[str, int, str]
"""A row across runs: its path, in flight and baseline."""

WORSE = 0.8
"""A ratio below this share of an earlier run's (above it, for a latency) is called out:
runs on one machine differ by up to 15% from hour to hour."""


class NotABenchRun(ValueError):
    """A ``--compare`` file that ``claimcheck bench --json`` did not write."""


def key(row: Measurement) -> RowKey:
    return (row.path, row.in_flight, row.baseline)


def earlier_ratios(path: Path) -> dict[RowKey, float]:
    """Each row's ratio in an earlier ``--json`` file, read before a run of many minutes."""
    try:
        rows: list[dict[str, Any]] = json.loads(path.read_text())["rows"]
        return {
            (row["path"], row["in_flight"], row["baseline"]): float(ratio)
            for row in rows
            if (ratio := row["ratio"])  # a row without a baseline has none
        }
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise NotABenchRun(f"{path}: not a `claimcheck bench --json` file ({error})") from None


def worse(row: Measurement, earlier: float | None) -> bool:
    """Whether ``row`` fell further behind its baseline than noise explains."""
    ratio = row.ratio
    if not ratio or not earlier:
        return False
    kept = earlier / ratio if row.unit == "ms" else ratio / earlier  # 1: as good as before
    return kept < WORSE


def table(results: list[Measurement], earlier: dict[RowKey, float] | None = None) -> Table:
    columns = ["path", "in flight", "ours", "baseline", "theirs", "ratio", "bounded by"]
    if earlier is not None:
        columns.insert(6, "earlier")
    view = Table(*columns)
    for row in results:
        ratio = row.ratio
        cells = [
            row.path,
            str(row.in_flight),
            figure(row.value, row.unit) + ("" if row.unit == "ms" else f" {row.unit}"),
            row.baseline,
            figure(row.baseline_value, row.unit),
            "-" if ratio is None else f"{ratio:.2f}",
            row.bound,
        ]
        if earlier is not None:
            before = earlier.get(key(row))
            mark = " worse" if worse(row, before) else ""
            cells.insert(6, "-" if before is None else f"{before:.2f}{mark}")
        view.add_row(*cells)
    return view


def regressions(results: list[Measurement], earlier: dict[RowKey, float]) -> list[str]:
    """One line per row whose ratio fell by more than noise against the earlier run."""
    return [
        f"{row.path}, {row.in_flight} in flight: {row.ratio:.2f} against {earlier[key(row)]:.2f}"
        for row in results
        if worse(row, earlier.get(key(row)))
    ]


def write_json(path: Path, results: list[Measurement]) -> None:
    document = {
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": {"cores": cores(), "python": platform.python_version()},
        "rows": [row.as_json() for row in results],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
