"""What commands print for programs and people: ``--json`` in the wire schemas' camelCase, and
times as a person reads them.

The ledger's event fields and the views' columns are snake_case (Python parameter and SQL
names), while every wire type is camelCase; ``--json`` output is read by the same programs
that read the wire, so every key is given in camelCase. What a user or a model wrote (a
tool payload, a model's output, checkpoint data, a tool's facts) is shown as it was written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from handoff_schemas import EventEnvelope
from handoff_schemas.base import wire_name

AS_WRITTEN = frozenset(
    {"output", "payload", "data", "facts", "refs", "result", "checkpoints", "checkpointEvidence"}
)
"""Keys whose values are someone's own data: their keys are not renamed."""


def wire_keys(value: Any) -> Any:
    """``value`` with every dict key in camelCase, except inside what was written as is."""
    if isinstance(value, dict):
        renamed = {}
        for key, item in value.items():
            name = wire_name(key) if isinstance(key, str) else key
            renamed[name] = item if name in AS_WRITTEN else wire_keys(item)
        return renamed
    if isinstance(value, list | tuple):
        return [wire_keys(item) for item in value]
    return value


def show_json(value: object) -> None:
    """Print ``value`` as JSON for programs, with camelCase keys (sorted, for stable diffs)."""
    print(json.dumps(wire_keys(value), indent=2, sort_keys=True, default=str))


def events_json(history: Iterable[EventEnvelope]) -> list[dict[str, Any]]:
    """Events as their envelope's wire form, with each event's own fields in camelCase."""
    return [{**msgspec.to_builtins(event), "data": wire_keys(event.data)} for event in history]


DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: a time ago (``90s``, ``15m``, ``2h``, ``7d``) or an ISO 8601 date or time.

    Raises ``ValueError`` with what is accepted.
    """
    now = now or datetime.now(UTC)
    if found := DURATION.match(text.strip()):
        return now - timedelta(**{UNITS[found.group(2)]: float(found.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r} is neither a time ago (30s, 15m, 2h, 7d) nor an ISO 8601 "
            "date or time (2026-11-25, 2026-11-25T18:00:00Z)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def age(seconds: float) -> str:
    """A duration as a person says it: ``42s``, ``3m05s``, ``2h10m``, ``3d04h``."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
