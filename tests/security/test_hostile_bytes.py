"""Item 7 of issue 12 (property-based): random and hostile bytes fed to the runtime's
decoder, to ``Runtime.dispatch`` over a real bus, and to every reader. Each either reads
the message or refuses it in its own terms; none raises, hangs or stops.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, get_args

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.msg import Msg

from bus.ledger.verification import read_published
from bus.operations.audit import ChainWatcher, classify
from bus.operations.operators import read_event, submit
from bus.transport.subjects import Subjects
from handoff_schemas import (
    OPERATIONS,
    EventEnvelope,
    Evidence,
    Handoff,
    Reply,
    SchemaError,
    decode,
    encode,
)
from handoff_schemas.runtime import ErrorCode
from projections import EscalationsView, WorkflowView
from tests.conftest import Bus

SUBJECTS = Subjects("cc")
KEYS = [
    "workflowId",
    "stepKey",
    "name",
    "data",
    "usage",
    "inputTokens",
    "evidence",
    "handoff",
    "escalation",
    "resolution",
    "escalationId",
    "claim",
    "auditId",
    "hash",
    "prevHash",
    "type",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


def deep(depth: int, opener: bytes) -> bytes:
    closer = b"]" if opener == b"[" else b"}"
    inner = b'{"a":' if opener == b"{" else b"["
    return inner * depth + b"1" * (opener == b"{") + closer * depth


hostile = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.builds(deep, st.integers(1, 6000), st.sampled_from([b"[", b"{"])),
    st.builds(lambda n: b"[" * n, st.integers(1, 6000)),
    st.text(max_size=50).map(lambda t: t.encode("utf-16")),
)

FAST = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FAST
@given(hostile, st.sampled_from([*OPERATIONS.values(), EventEnvelope, Evidence, Handoff, Reply]))
def test_the_decoder_returns_a_value_or_a_schema_error(data: bytes, into: type) -> None:
    try:
        decode(data, into)
    except SchemaError as error:
        assert error.fields and all(f.field for f in error.fields)


@FAST
@given(hostile, st.sampled_from(["cc.evidence.w", "cc.events.w.ClaimMade", "cc.audit.x"]))
def test_the_auditor_classifies_every_message(data: bytes, subject: str) -> None:
    finding = classify(Msg(_client=None, subject=subject, data=data), ChainWatcher(), SUBJECTS)  # type: ignore[arg-type]
    assert finding.kind in ("evidence", "break", "claim", "unreadable")


@FAST
@given(hostile)
def test_verify_and_the_escalation_reader_skip_what_they_cannot_read(data: bytes) -> None:
    unreadable: list[str] = []
    event = read_published(data, unreadable)
    assert (event is None) == bool(unreadable)
    view = EscalationsView()
    if (escalation_event := read_event(data)) is not None:
        view.apply(escalation_event)
    assert isinstance(view.open, list)


@FAST
@given(
    st.sampled_from(
        [
            "EscalationRaised",
            "EscalationResolved",
            "HandoffSent",
            "ClaimMade",
            "WorkflowStarted",
            "CheckpointReached",
            "WorkflowFailed",
            "HandoffRejected",
            "EventQuarantined",
            "Other",
        ]
    ),
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5),
)
def test_the_folding_views_skip_malformed_events(event_type: str, data: dict[str, Any]) -> None:
    event = EventEnvelope(
        workflow_id="w",
        version=1,
        type=event_type,
        timestamp="2026-01-01T00:00:00Z",
        data=data,  # type: ignore[arg-type]
    )
    WorkflowView("w").apply(event)
    view = EscalationsView()
    view.apply(event)
    for escalation in view.open:
        assert isinstance(escalation["escalationId"], str)


ERROR_CODES = set(get_args(ErrorCode))


async def test_dispatch_answers_every_request_with_a_reply(bus: Bus) -> None:
    """``Runtime.dispatch`` on a real bus and ledger: a structured reply, whatever arrives."""
    loop = asyncio.get_running_loop()
    workflow_id = (await submit(bus.nc, bus.subjects, "t", "triage", b"{}")).workflow_id
    agents = st.sampled_from(["triage", "mallory", "cli"])
    ops = st.sampled_from([*OPERATIONS, "nope"])
    # requests about a real workflow, with random fields: these reach the ledger
    about_it = st.builds(
        lambda key, extra: json.dumps(
            {"workflowId": workflow_id, "stepKey": key, **extra}
        ).encode(),
        st.text(min_size=1, max_size=10),
        st.dictionaries(st.sampled_from(KEYS[2:]) | st.text(max_size=8), json_values, max_size=4),
    )

    @settings(max_examples=200, deadline=None)
    @given(agents, ops, hostile | about_it)
    def property(agent: str, op: str, data: bytes) -> None:
        future = asyncio.run_coroutine_threadsafe(bus.runtime.dispatch(agent, op, data), loop)
        reply = future.result(timeout=10)
        assert isinstance(reply, Reply)
        if not reply.ok:
            assert reply.error is not None and reply.error.code in ERROR_CODES
            assert "Traceback" not in reply.error.message
        encode(reply)

    await asyncio.to_thread(property)
    assert bus.runtime.workflows is not None
    healthy = await bus.runtime.dispatch("triage", "state", b'{"workflowId": "nonsense"}')
    assert healthy.error is not None and healthy.error.code == "unknown_workflow"
