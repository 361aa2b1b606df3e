"""What an agent reports of a failed handler: the kind of fault, within the wire's bounds,
without secrets (pure logic; the real-process path is in tests/operations)."""

from __future__ import annotations

import json

import msgspec
import pytest
from pydantic import BaseModel, ValidationError

from agents.faults import bounded, kind_of, redacted_text
from handoff_schemas.limits import MAX_TEXT


class Order(BaseModel):
    item: str


def raised(action) -> Exception:  # type: ignore[no-untyped-def]
    try:
        action()
    except Exception as error:
        return error
    raise AssertionError("nothing raised")


def test_each_failure_has_its_kind() -> None:
    assert kind_of(raised(lambda: json.loads("{nope"))) == "undecodable_input"
    assert kind_of(raised(lambda: b"\xff".decode())) == "undecodable_input"
    assert kind_of(raised(lambda: msgspec.json.decode(b"[1"))) == "undecodable_input"
    assert kind_of(raised(lambda: Order.model_validate({}))) == "invalid_payload"
    assert isinstance(raised(lambda: Order.model_validate({})), ValidationError)
    assert kind_of(raised(lambda: 1 / 0)) == "handler_exception"


def test_a_trace_keeps_its_end_and_a_message_its_start() -> None:
    long = "a" * MAX_TEXT + "where it failed"
    assert len(bounded(long)) == MAX_TEXT and bounded(long).endswith("where it failed")
    assert len(bounded(long, keep="start")) == MAX_TEXT and bounded(long, "start")[:3] == "aaa"
    assert bounded("short") == "short"


def test_secrets_never_leave_the_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-very-secret-1234")
    text = (
        "could not reach postgresql://bob:hunter2@db:5432/ledger with key sk-ant-very-secret-1234"
    )
    said = redacted_text(text)
    assert "hunter2" not in said and "sk-ant-very-secret-1234" not in said
    assert "postgresql://bob:***@db:5432/ledger" in said and "<ANTHROPIC_API_KEY>" in said
