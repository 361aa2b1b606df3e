"""The import direction of the architecture, checked on the source: ``handoff_schemas`` <-
``bus`` <- ``agents``, ``projections`` reads events, and inside ``bus`` the transport,
the ledger, the runtime and operations each import only the parts below them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOUNDATION = ("handoff_schemas", "bus.settings", "bus.telemetry")
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "handoff_schemas": ("handoff_schemas",),
    "projections": ("projections", "handoff_schemas"),
    "bus.settings": FOUNDATION,
    "bus.telemetry": FOUNDATION,
    "bus.transport": (*FOUNDATION, "bus.transport"),
    "bus.ledger": (*FOUNDATION, "bus.transport", "bus.ledger", "projections"),
    "bus.runtime": (*FOUNDATION, "bus.transport", "bus.ledger", "bus.runtime"),
    "bus.operations": (*FOUNDATION, "bus", "projections"),
    "bus.tools": (*FOUNDATION, "bus.runtime.catalogue", "bus.tools"),  # examples, on the SDK
    "bus": (*FOUNDATION, "bus"),  # the package's __init__: the public API
    # The catalogue (tool payloads) and the price table (model families: what caches) are
    # data agents read; nothing else of the runtime.
    "agents": (
        *FOUNDATION,
        "agents",
        "bus.transport",
        "bus.runtime.catalogue",
        "bus.runtime.prices",
    ),
}
OURS = ("handoff_schemas", "projections", "bus", "agents")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """The most specific rule that covers ``module``."""
    return max((p for p in MAY_IMPORT if module == p or module.startswith(f"{p}.")), key=len)


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in OURS}


SOURCES = sorted(p for top in OURS for p in (ROOT / top).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_module_imports_only_the_parts_below_it(path: Path) -> None:
    allowed = MAY_IMPORT[part_of(module_name(path))]
    upward = {
        name
        for name in imports_of(path)
        if not any(name == a or name.startswith(f"{a}.") for a in allowed)
    }
    assert not upward, f"{module_name(path)} may import only {allowed}, not {sorted(upward)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_module_opens_with_a_sentence_saying_what_it_is_for(path: Path) -> None:
    assert ast.get_docstring(ast.parse(path.read_text())), f"{path} has no opening docstring"
