"""The bench's results as a table for people and as JSON for comparing commits."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path

from rich.table import Table

from bus.operations.bench import Measurement, cores


def figure(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f} ms" if unit == "ms" else f"{value:,.0f}"


def table(results: list[Measurement]) -> Table:
    view = Table("path", "in flight", "ours", "baseline", "theirs", "ratio", "bounded by")
    for row in results:
        ratio = row.ratio
        view.add_row(
            row.path,
            str(row.in_flight),
            figure(row.value, row.unit) + ("" if row.unit == "ms" else f" {row.unit}"),
            row.baseline,
            figure(row.baseline_value, row.unit),
            "-" if ratio is None else f"{ratio:.2f}",
            row.bound,
        )
    return view


def write_json(path: Path, results: list[Measurement]) -> None:
    document = {
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": {"cores": cores(), "python": platform.python_version()},
        "rows": [row.as_json() for row in results],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
