"""Wire types: good messages pass, and every bad field is named."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from handoff_schemas import Handoff, HandoffRequest, Reply, SchemaError, decode, export_schemas

GOOD_HANDOFF = {
    "handoffId": "ho-1",
    "workflowId": "wf-1",
    "from": "triage",
    "to": "notifier",
    "task": "notify_escalation",
    "artifactId": "sha256-" + "a" * 64,
    "evidenceId": "ev-1",
    "status": "verified",
    "scope": "complaint:northwind",
    "createdAt": "2026-11-23T10:00:00Z",
}


def test_a_good_handoff_decodes_with_wire_names() -> None:
    handoff = decode(json.dumps(GOOD_HANDOFF).encode(), Handoff)
    assert handoff.from_ == "triage"
    assert handoff.artifact_id == GOOD_HANDOFF["artifactId"]
    assert msgspec.json.decode(msgspec.json.encode(handoff))["from"] == "triage"


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"artifactId": None}, "artifactId", "Expected `str`, got `null`"),
        ({"status": 3}, "status", "Expected `str`, got `int`"),
        ({"status": "done-ish"}, "status", "Invalid enum value 'done-ish'"),
        ({"artifactId": "not-a-digest"}, "artifactId", "Expected `str` matching regex"),
        ({"to": "Not A Name"}, "to", "Expected `str` matching regex"),
        ({"summary": "trust me"}, "summary", "unknown field"),
    ],
)
def test_bad_fields_are_named(change: dict, field: str, message: str) -> None:
    with pytest.raises(SchemaError) as raised:
        decode(json.dumps({**GOOD_HANDOFF, **change}).encode(), Handoff)
    [error] = raised.value.fields
    assert error.field == field
    assert message in error.message


@pytest.mark.parametrize("missing", ["scope", "from", "workflowId"])
def test_a_missing_field_is_named(missing: str) -> None:
    document = {k: v for k, v in GOOD_HANDOFF.items() if k != missing}
    with pytest.raises(SchemaError) as raised:
        decode(json.dumps(document).encode(), Handoff)
    assert [(e.field, e.message) for e in raised.value.fields] == [
        (missing, "missing required field")
    ]


def test_nested_errors_carry_their_path() -> None:
    with pytest.raises(SchemaError) as raised:
        decode(b'{"ok": false, "error": {"code": "internal"}}', Reply)
    assert [(e.field, e.message) for e in raised.value.fields] == [
        ("error.message", "missing required field")
    ]


@pytest.mark.parametrize("data", [b"", b"{", b"not json", b"\xff\xfe"])
def test_non_json_is_a_schema_error_on_the_whole_message(data: bytes) -> None:
    with pytest.raises(SchemaError) as raised:
        decode(data, HandoffRequest)
    assert raised.value.fields[0].field == "$"
    assert "not valid JSON" in raised.value.fields[0].message


def test_export_writes_one_schema_per_type(tmp_path: Path) -> None:
    paths = export_schemas(tmp_path)
    names = {path.name for path in paths}
    assert {
        "Handoff.schema.json",
        "Evidence.schema.json",
        "Claim.schema.json",
        "Reply.schema.json",
    } <= names
    schema = json.loads((tmp_path / "Handoff.schema.json").read_text())
    definition = schema["$defs"]["Handoff"]
    assert definition["additionalProperties"] is False
    assert {
        "from",
        "to",
        "task",
        "artifactId",
        "status",
        "scope",
        "handoffId",
        "workflowId",
        "createdAt",
    } <= set(definition["required"])
    assert "evidenceId" in definition["properties"]
