"""What the runtime sends a tool host, and what comes back.

``idempotencyKey`` is the workflow id plus the step key: a retried call carries
the same key, and the tool host returns its recorded result instead of acting
twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from handoff_schemas.base import WireStruct
from handoff_schemas.runtime import FieldError


class ToolCall(WireStruct):
    """A call the runtime allowed; ``signature`` is the runtime's, over every other field,
    and a tool host refuses the call after ``expiresAt``."""

    idempotency_key: str
    workflow_id: str
    actor: str
    payload: dict[str, Any]
    expires_at: datetime | None = None
    signature: str = ""


class ToolResult(WireStruct):
    status: Literal["succeeded", "failed", "invalid_payload"]
    output: dict[str, Any] = {}
    refs: dict[str, str] = {}
    error: str | None = None
    transient: bool = False
    fields: list[FieldError] = []
    reconciled: str = ""
    """Set when an earlier attempt with this key ended with its outcome unknown (its host died
    mid-effect) and this result came from running it again under the tool's own idempotency."""
