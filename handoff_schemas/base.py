"""The one base class every wire type shares.

Wire names are camelCase (``artifactId``) so agents in other languages see
ordinary JSON; Python names stay snake_case. ``from`` is a Python keyword, so
the field is ``from_`` in Python and ``from`` on the wire. Unknown fields are
rejected: a typo in a handoff must fail loudly, not be silently dropped.
"""

from __future__ import annotations

import msgspec


def wire_name(python_name: str) -> str:
    """Map a Python field name to its camelCase wire name."""
    head, *rest = python_name.rstrip("_").split("_")
    return head + "".join(part.title() for part in rest)


class WireStruct(msgspec.Struct, forbid_unknown_fields=True, rename=wire_name):
    """Base for every message on the bus."""
