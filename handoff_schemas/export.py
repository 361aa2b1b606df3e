"""JSON Schema files for agents written in other languages."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from handoff_schemas import controls, messages, runtime, tools
from handoff_schemas.base import WireStruct


def wire_types() -> list[type[WireStruct]]:
    """Every public wire type, in a stable order."""
    found: dict[str, type[WireStruct]] = {}
    for module in (messages, runtime, controls, tools):
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, WireStruct)
                and value is not WireStruct
            ):
                found.setdefault(value.__name__, value)
    return [found[name] for name in sorted(found)]


def export_schemas(directory: Path) -> list[Path]:
    """Write ``<Type>.schema.json`` for each wire type; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for wire_type in wire_types():
        schema = msgspec.json.schema(wire_type)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        path = directory / f"{wire_type.__name__}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
