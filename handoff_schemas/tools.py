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


class FactSource(WireStruct):
    """Where one declared fact is read: a field of the call's ``input`` or of its ``output``."""

    side: Literal["input", "output"]
    field: str


class ToolDescription(WireStruct):
    """What a tool host registers for each tool it serves (the runtime learns tools from these).

    ``resource`` is a template over input fields (``mailto:{to}``): the runtime fills it
    from the payload it validated, so the policy sees the real target. ``idempotency``
    says how the external system recognises a retry: ``key`` (the tool hands it the
    idempotency key, so running a call again is harmless) or ``none`` (a call whose
    outcome is unknown is not run again unless ``reconcilable`` says the tool can ask).
    """

    name: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    resource: str
    facts: dict[str, FactSource] = {}
    idempotency: Literal["key", "none"] = "key"
    reconcilable: bool = False
    description: str = ""
    catalogue: str = ""
