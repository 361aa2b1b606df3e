"""The exported protocol (docs/protocol/) is what the code generates, and it is complete:
every operation with its request and reply, every tool's input and output, every reference
resolving. An agent written in another language reads these files, so they must not drift."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_type_hints

import pytest

from bus.operations.asyncapi import OPERATION_SUMMARIES, export_protocol
from bus.runtime.artifacts import ArtifactHandlers
from bus.runtime.catalogue import fields_of
from bus.runtime.claims import ClaimHandlers
from bus.runtime.confirmation import ConfirmationHandlers
from bus.runtime.controls import ControlHandlers
from bus.runtime.escalations import EscalationHandlers
from bus.runtime.execution import ToolExecution
from bus.runtime.faults import FaultHandlers
from bus.runtime.permissions import PermissionHandlers
from bus.runtime.pipeline import PipelineHandlers
from bus.runtime.workflows import WorkflowHandlers
from bus.tools import complaints
from handoff_schemas import OPERATIONS, REPLIES
from tests.conftest import claimcheck

CHECKED_IN = Path(__file__).resolve().parents[2] / "docs" / "protocol"
HANDLERS = (
    ArtifactHandlers,
    WorkflowHandlers,
    PipelineHandlers,
    PermissionHandlers,
    ToolExecution,
    ClaimHandlers,
    EscalationHandlers,
    FaultHandlers,
    ControlHandlers,
    ConfirmationHandlers,
)


def files(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): path.read_text()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_the_checked_in_protocol_is_what_the_code_generates(tmp_path: Path) -> None:
    export_protocol(tmp_path, [complaints])
    generated, checked_in = files(tmp_path), files(CHECKED_IN)
    assert sorted(generated) == sorted(checked_in), "run: claimcheck schemas export docs/protocol"
    stale = [name for name in generated if generated[name] != checked_in[name]]
    assert stale == [], f"stale {stale}; run: claimcheck schemas export docs/protocol"


def test_the_cli_writes_the_same_files(tmp_path: Path) -> None:
    exported = claimcheck("schemas", "export", str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert files(tmp_path / "out") == files(CHECKED_IN)


def test_every_operation_has_a_reply_type_and_a_summary() -> None:
    """A new operation needs its reply type in REPLIES and a line in the AsyncAPI document."""
    assert sorted(REPLIES) == sorted(OPERATIONS)
    assert sorted(OPERATION_SUMMARIES) == sorted(OPERATIONS)


@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_each_operation_replies_with_the_documented_type(op: str) -> None:
    """REPLIES (which the AsyncAPI document is built from) is what the handlers return."""
    method = op.removeprefix("artifact_")  # ArtifactHandlers.put and .get
    [handler] = [getattr(cls, method) for cls in HANDLERS if hasattr(cls, method)]
    assert get_type_hints(handler)["return"] is REPLIES[op]


def test_every_operation_has_a_request_and_a_reply() -> None:
    document = json.loads((CHECKED_IN / "asyncapi.json").read_text())
    assert document["asyncapi"] == "3.0.0"
    for op, request_type in OPERATIONS.items():
        channel = document["channels"][f"runtime.{op}"]
        assert channel["address"] == f"{{prefix}}.rt.{{agent}}.{op}"
        request = channel["messages"]["request"]["payload"]["$ref"]
        assert request == f"{request_type.__name__}.schema.json"
        assert document["operations"][op]["reply"]["channel"]["$ref"].endswith(f"{op}.reply")


def test_every_tool_has_an_input_and_an_output_schema() -> None:
    for tool in complaints:
        payload = json.loads((CHECKED_IN / "tools" / f"{tool.name}.input.schema.json").read_text())
        assert sorted(payload["properties"]) == sorted(fields_of(tool.input))
        output = json.loads((CHECKED_IN / "tools" / f"{tool.name}.output.schema.json").read_text())
        assert sorted(output["properties"]) == sorted(fields_of(tool.output))


def references(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in references(value)]
    if isinstance(node, list):
        return [r for value in node for r in references(value)]
    return []


def test_every_reference_in_the_asyncapi_document_resolves() -> None:
    document = json.loads((CHECKED_IN / "asyncapi.json").read_text())
    refs = references(document)
    assert refs
    for reference in refs:
        if reference.startswith("#/"):
            node = document
            for part in reference[2:].split("/"):
                node = node[part]  # a KeyError names the broken reference
        else:
            assert (CHECKED_IN / reference).is_file(), reference
