"""The tool SDK end to end: a user's own tool, in a module of a temporary directory, served by
``claimcheck tools serve MODULE:CATALOGUE`` as its own process; the runtime learns its schema
from the registry, governs and validates calls by it, and records its declared facts.
Real nats-server, runtime, tool host processes and SMTP."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from pydantic import BaseModel

from agents import Context, RuntimeRefused, ScriptedModel
from bus.runtime.catalogue import Call, Catalogue, ToolDeclarationError, tool
from bus.runtime.tool_host import ToolHost
from bus.settings import Settings
from handoff_schemas import ToolCall, ToolDescription
from tests.conftest import Bus, claimcheck, run_workflow

SCRIPT = str(Path(sys.executable).with_name("claimcheck"))

POLICY = """
[[rules]]
name = "notes"
actor = "triage"
action = "save_note"
resource = "notes:*"
effect = "allow"

[[rules]]
name = "internal-email"
actor = "triage"
action = "send_email"
resource = "mailto:*@acme.example"
effect = "allow"

[failures.invalid_tool_payload]   # the agent is told to stop at once: no model to repair
strategy = "repair"
max_attempts = 1
"""

NOTES_MODULE = '''
"""A user's own tool: a note saved as a file named by the idempotency key."""

import hashlib

from pydantic import BaseModel, Field

from bus import Call, Catalogue, tool


class Note(BaseModel):
    topic: str = Field(pattern="^[a-z]+$")
    text: str = Field(max_length=40)


class Saved(BaseModel):
    note_id: str
    chars: int


def where(call: Call):
    name = hashlib.sha256(call.idempotency_key.encode()).hexdigest()[:16]
    return call.settings.state_dir / "notes" / f"{name}.txt"


async def find(note: Note, call: Call) -> Saved | None:
    path = where(call)
    return Saved(note_id=path.stem, chars=len(note.text)) if path.exists() else None


@tool(
    name="save_note",
    resource="notes:{topic}",
    facts={"topic": "topic", "noteId": "note_id"},
    idempotency="none",
    reconcile=find,
)
async def save_note(note: Note, call: Call) -> Saved:
    """Save a note."""
    path = where(call)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(note.text)
    return Saved(note_id=path.stem, chars=len(note.text))


catalogue = Catalogue("notes", [save_note])
'''


@pytest.fixture
async def notes_host(bus: Bus, tmp_path: Path) -> AsyncIterator[Path]:
    """``claimcheck tools serve notes_tools:catalogue`` run in a directory holding the module
    (no PYTHONPATH): a second tool host, beside the in-process one serving the examples."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes_tools.py").write_text(NOTES_MODULE)
    log = tmp_path / "notes-host.log"
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("CLAIMCHECK_")
    }
    environment.update(
        CLAIMCHECK_NATS_URL=bus.settings.nats_url,
        CLAIMCHECK_STATE_DIR=str(bus.settings.state_dir),  # the runtime's public key is there
    )
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            SCRIPT,  # the installed script: no `python -m`, so the current directory is not
            "tools",  # on sys.path unless the command puts it there
            "serve",
            "notes_tools:catalogue",
            cwd=project,
            stdout=out,
            stderr=out,
            env=environment,
        )
    try:
        async with asyncio.timeout(30):
            while "tool host serving" not in log.read_text():
                assert process.returncode is None, log.read_text()
                await asyncio.sleep(0.05)
        yield bus.settings.state_dir / "notes"
    finally:
        process.terminate()
        assert await process.wait() == 0, log.read_text()


async def test_a_users_tool_is_served_learned_governed_and_its_facts_recorded(
    bus: Bus, notes_host: Path, mailbox: Any
) -> None:
    async def saves_and_mails(ctx: Context) -> None:
        saved = await ctx.tools.save_note(topic="ops", text="call northwind")
        mailed = await ctx.tools.send_email(to="ops@acme.example", subject="note", body="saved")
        await ctx.summarize("saved", asserts="succeeded", evidence=[saved.evidence])
        assert mailed.output["messageId"]

    view = await run_workflow(bus, saves_and_mails, ScriptedModel([]))
    assert view.status == "completed", view.failures
    note, email = view.evidence
    assert (note["action"], note["resource"], note["status"]) == (
        "save_note",
        "notes:ops",
        "succeeded",
    )
    [saved] = await asyncio.to_thread(lambda: list(notes_host.iterdir()))
    assert note["facts"] == {"topic": "ops", "noteId": saved.stem}
    assert saved.read_text() == "call northwind"
    # two hosts, two catalogues: each tool ran on the host that serves it
    assert email["facts"]["recipient"] == "ops@acme.example"
    assert len(mailbox.received) == 1
    kv = await bus.nc.jetstream().key_value(bus.subjects.registry_bucket)
    registered = {
        name: msgspec.json.decode((await kv.get(name)).value or b"", type=ToolDescription)
        for name in await kv.keys()
    }
    assert {n: d.catalogue for n, d in registered.items()} == {
        "save_note": "notes",
        "send_email": "complaints",
        "create_ticket": "complaints",
    }
    assert registered["save_note"].input_schema["properties"]["text"]["maxLength"] == 40


async def test_a_payload_that_breaks_the_learned_schema_is_refused_and_recorded(
    bus: Bus, notes_host: Path
) -> None:
    refused: list[RuntimeRefused] = []

    async def writes_too_much(ctx: Context) -> None:
        try:
            await ctx.tools.save_note(topic="Ops!", text="x" * 41)
        except RuntimeRefused as error:
            refused.append(error)
            raise

    view = await run_workflow(bus, writes_too_much, ScriptedModel([]))
    [error] = refused
    assert error.code == "invalid_tool_payload"
    assert {f.field for f in error.error.fields} == {"topic", "text"}
    assert [f["kind"] for f in view.failures][:1] == ["invalid_tool_payload"]
    assert not await asyncio.to_thread(notes_host.exists), "the tool host never ran the call"
    assert view.evidence == []


async def test_a_tool_no_host_serves_is_refused_with_the_served_ones(
    bus: Bus, notes_host: Path
) -> None:
    bus.settings.tool_availability_window = 1.0  # how long a host may take to register it
    refused: list[RuntimeRefused] = []

    async def calls_a_stranger(ctx: Context) -> None:
        try:
            await ctx.tools.launch_rocket(target="moon")
        except RuntimeRefused as error:
            refused.append(error)
            raise

    view = await run_workflow(bus, calls_a_stranger, ScriptedModel([]))
    [error] = refused
    assert error.code == "invalid_request"
    assert "no tool host serves 'launch_rocket'" in str(error)
    assert "save_note" in str(error) and "send_email" in str(error)
    assert [f.field for f in error.error.fields] == ["tool"]
    assert view.evidence == []
    # it was waited for (a host may have been starting), each look an event
    assert {w["kind"] for w in view.tool_unavailable} == {"not_registered"}
    # recorded as the step's reply: the refusal is in the ledger, not only in a log
    history = bus.ledger.history(view.workflow_id)
    assert any("launch_rocket" in str(event.data) for event in history)


def test_serving_a_catalogue_that_is_not_there_says_so(tmp_path: Path) -> None:
    for target, expected in [
        ("no_such_module:catalogue", "cannot load no_such_module:catalogue"),
        ("json:dumps", "is a function, not a tool Catalogue"),
        ("nonsense", "give MODULE:OBJECT"),
    ]:
        served = claimcheck("tools", "serve", target, state_dir=tmp_path, cwd=tmp_path)
        assert served.returncode == 1
        assert expected in served.stdout, served.stdout + served.stderr
        assert "Traceback" not in served.stderr


# -- the declaration, and a call whose outcome is unknown (pure logic) ------------------------


class Ask(BaseModel):
    to: str


class Done(BaseModel):
    ref: str


def test_a_wrong_declaration_fails_at_import_saying_what_to_change() -> None:
    async def good(ask: Ask, call: Call) -> Done:
        return Done(ref="r")

    def blocking(ask: Ask, call: Call) -> Done:
        return Done(ref="r")

    async def untyped(ask, call):  # type: ignore[no-untyped-def]
        return None

    cases = [
        (dict(resource="mailto:{recipient}"), good, "resource names unknown fields"),
        (dict(resource="mailto:{to.__class__}"), good, "is not a field name"),
        (dict(resource="x:{to}", facts=["nothing"]), good, "a field of neither"),
        (dict(resource="x:{to}"), blocking, "must be async def"),
        (dict(resource="x:{to}"), untyped, "must be a pydantic model"),
    ]
    for options, function, message in cases:
        with pytest.raises(ToolDeclarationError, match=message):
            tool(name="t", **options)(function)  # type: ignore[arg-type]
    spec = tool(name="t", resource="x:{to}", facts=["to", "ref"])(good)
    assert {f: s.side for f, s in spec.facts.items()} == {"to": "input", "ref": "output"}
    with pytest.raises(ToolDeclarationError, match="twice"):
        Catalogue("c", [spec, spec])


async def test_an_unknown_outcome_without_a_way_to_recognise_a_retry_is_not_run_again(
    tmp_path: Path,
) -> None:
    ran: list[str] = []

    async def effect(ask: Ask, call: Call) -> Done:
        ran.append(call.idempotency_key)
        return Done(ref="r")

    once_only = tool(name="t", resource="x:{to}", idempotency="none")(effect)
    retriable = tool(name="t2", resource="x:{to}", idempotency="key")(effect)
    host = ToolHost(Settings(state_dir=tmp_path), [Catalogue("c", [once_only, retriable])])
    call = ToolCall(idempotency_key="k", workflow_id="wf", actor="a", payload={"to": "x"})
    unknown = "the attempt by h1 ended with no recorded result (outcome unknown)"
    result = await host._run(once_only, call, unknown)
    assert (result.status, result.transient) == ("failed", False)
    assert "outcome is unknown" in (result.error or "") and ran == []
    result = await host._run(retriable, call, unknown)
    assert result.status == "succeeded" and result.output == {"ref": "r"} and ran == ["k"]


async def test_a_tool_that_raises_is_a_failure_with_its_message(tmp_path: Path) -> None:
    async def buggy(ask: Ask, call: Call) -> Done:
        raise KeyError("customer")

    spec = tool(name="buggy", resource="x:{to}")(buggy)
    host = ToolHost(Settings(state_dir=tmp_path), [Catalogue("c", [spec])])
    call = ToolCall(idempotency_key="k", workflow_id="wf", actor="a", payload={"to": "x"})
    result = await host._run(spec, call, "")
    assert (result.status, result.transient) == ("failed", False)
    assert result.error == "buggy raised KeyError: 'customer' (outcome unknown)"


def test_schemas_export_writes_each_tools_input_and_output_schema(tmp_path: Path) -> None:
    exported = claimcheck("schemas", "export", str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    tools = tmp_path / "out" / "tools"
    assert sorted(p.name for p in tools.iterdir()) == [
        "create_ticket.input.schema.json",
        "create_ticket.output.schema.json",
        "send_email.input.schema.json",
        "send_email.output.schema.json",
    ]
    ticket = json.loads((tools / "create_ticket.input.schema.json").read_text())
    assert ticket["properties"]["severity"]["enum"] == ["low", "medium", "high", "critical"]
    filed = json.loads((tools / "create_ticket.output.schema.json").read_text())
    assert filed["required"] == ["ticketId"]  # the wire's camelCase
    assert (tmp_path / "out" / "ToolDescription.schema.json").exists()
    refused = claimcheck("schemas", "export", str(tmp_path / "x"), "--tools", "nope:catalogue")
    assert refused.returncode == 1 and "cannot load nope:catalogue" in refused.stdout
