"""Size limits on everything an agent controls, checked when a request arrives.

One message must never be able to stop the bus: a request the runtime accepts becomes
ledger events, stream messages and rows in the read models, so every field an agent
fills has a bound here, and large content goes to artifacts (passed by id). The README
lists these limits; changing one is a wire-compatibility decision.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

MAX_REQUEST_BYTES = 64 * 1024
"""A whole request to the runtime, in bytes; bigger content belongs in an artifact."""

MAX_ARTIFACT_BYTES = 512 * 1024
"""One artifact, in bytes (before the base64 of its JSON request): what ``artifact_put``
stores and ``artifact_get`` returns, within NATS's default 1 MiB message."""

MAX_ARTIFACT_REQUEST_BYTES = MAX_ARTIFACT_BYTES * 4 // 3 + 4096
"""A whole ``artifact_put`` request: the base64 of the largest artifact, and its envelope."""


def request_limit(op: str) -> int:
    """The most bytes a request for ``op`` may have: an artifact's upload is the exception."""
    return MAX_ARTIFACT_REQUEST_BYTES if op == "artifact_put" else MAX_REQUEST_BYTES


MAX_REQUEST_DEPTH = 32
"""How deeply a request's JSON may nest (objects and arrays)."""

MAX_DEPTH = 64
"""How deeply any document a reader decodes may nest: a request's limit plus the envelopes
the runtime wraps around it."""

MAX_ITEMS = 64
"""Keys of a free-form object (a tool payload, a model's output, checkpoint data), and
items of a list."""

MAX_TOKENS = 10_000_000
"""Tokens of one kind in one model call's usage."""

MAX_BUDGET_USD = 10_000.0
"""The largest budget a workflow may be started with."""

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
"""A workflow, handoff, escalation or evidence id."""

Label = Annotated[str, msgspec.Meta(max_length=256)]
"""A short label: a scope, a model name, a purpose, an approver."""

Resource = Annotated[str, msgspec.Meta(max_length=512)]
"""What an action acts on (``mailto:ops@acme.example``)."""

Text = Annotated[str, msgspec.Meta(max_length=4096)]
"""Free text: a reason, a detail, a note, a summary."""

Fields = Annotated[dict[str, Any], msgspec.Meta(max_length=MAX_ITEMS)]
"""A free-form object (its total size is bounded by :data:`MAX_REQUEST_BYTES`)."""

Tokens = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]
