"""The tool registry: how the runtime learns, at run time, the tools the tool hosts serve.

Each tool host, when it starts, writes a :class:`~handoff_schemas.ToolDescription`
per tool into a JetStream key-value bucket (key: the tool's name). The runtime reads
a tool's description when a call names it (kept for a few seconds, so a host
restarted with a new version is seen soon), validates the payload against the
input JSON Schema, fills the resource template for the policy, and reads the
declared facts for the evidence. It never imports a tool's code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import msgspec
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from bus.transport.subjects import Subjects
from handoff_schemas import FieldError, ToolDescription

log = logging.getLogger(__name__)

FRESH_SECONDS = 5.0
"""How long the runtime trusts a description it read before reading it again."""


async def register(
    js: JetStreamContext, subjects: Subjects, descriptions: Iterable[ToolDescription]
) -> None:
    """Describe the tools a host serves; a tool another host serves already is replaced."""
    kv = await js.key_value(subjects.registry_bucket)
    for description in descriptions:
        encoded = msgspec.json.encode(description)
        try:
            current = await kv.get(description.name)
        except KeyNotFoundError:
            current = None
        if current is not None and current.value != encoded:
            log.warning("tool %s: replacing its registered schema", description.name)
        if current is None or current.value != encoded:
            await kv.put(description.name, encoded)


def payload_problems(schema: dict[str, Any], payload: Any) -> list[FieldError]:
    """Where ``payload`` breaks ``schema``, one error per field; empty when it fits."""
    validator = Draft202012Validator(schema)
    problems: list[FieldError] = []
    for error in sorted(validator.iter_errors(payload), key=lambda e: list(e.absolute_path)):
        problems.extend(_field_errors(error))
    return problems


def _field_errors(error: ValidationError) -> list[FieldError]:
    where = ".".join(str(part) for part in error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        return [
            FieldError(field=f"{where}.{name}" if where else name, message="Field required")
            for name in error.validator_value
            if name not in error.instance
        ]
    return [FieldError(field=where or "$", message=error.message)]


class ToolRegistry:
    """The runtime's view of the registry: descriptions read on demand, briefly kept."""

    def __init__(self, js: JetStreamContext, subjects: Subjects) -> None:
        self.js = js
        self.subjects = subjects
        self._kv: KeyValue | None = None
        self._read: dict[str, tuple[float, ToolDescription]] = {}

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self.js.key_value(self.subjects.registry_bucket)
        return self._kv

    async def get(self, name: str) -> ToolDescription | None:
        """The description of ``name``, or None when no tool host has registered it."""
        kept = self._read.get(name)
        if kept is not None and time.monotonic() - kept[0] < FRESH_SECONDS:
            return kept[1]
        try:
            found = await (await self._bucket()).get(name)
            description = msgspec.json.decode(found.value or b"", type=ToolDescription)
        except KeyNotFoundError:
            description = None
        except Exception:
            if kept is not None:  # NATS is away: what we read last is still the best answer
                return kept[1]
            raise
        if description is not None:  # a tool not registered yet is looked up again next time
            self._read[name] = (time.monotonic(), description)
        return description

    async def names(self) -> list[str]:
        """Every registered tool's name (for the refusal of an unknown one)."""
        try:
            return sorted(await (await self._bucket()).keys())
        except NoKeysError:
            return []
