"""The agent protocol as files another language can use: JSON Schemas and an AsyncAPI 3 document.

``claimcheck schemas export DIR`` writes, all generated from the code:

- ``<Type>.schema.json``: every wire type (:func:`handoff_schemas.export_schemas`);
- ``tools/<tool>.input.schema.json`` and ``tools/<tool>.output.schema.json``: each tool's
  input and output, as its catalogue declares them (the project's, by default);
- ``asyncapi.json``: the subjects (channels), and for each runtime operation the request
  an agent sends and the reply it gets, referring to those schema files.

The repository keeps a copy in ``docs/protocol/``; a test regenerates it and compares, so
the documented protocol cannot drift from the code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bus.runtime.catalogue import Catalogue, export_tool_schemas
from bus.transport.subjects import Subjects
from handoff_schemas import OPERATIONS, REPLIES, export_schemas

SCHEMA = "https://json-schema.org/draft/2020-12/schema"
PREFIX = "{prefix}"
SUBJECTS = Subjects(PREFIX)
"""Subject templates: the prefix and the names in them are AsyncAPI channel parameters."""

OPERATION_SUMMARIES = {
    "start": "Start a workflow: its first handoff (the operator identity only).",
    "state": "The steps and checkpoints a workflow recorded, a page at a time.",
    "begin": "Start a handling in one request: intent, the artifact, context, recorded steps.",
    "intent": "Resolve the handoff to one of the tasks this agent knows (first step).",
    "context": "Record the artifacts read for this handoff, with their sizes (second step).",
    "reasoning": "Record a model call: what it believed, its usage and why it stopped.",
    "permit": "Ask whether an action on a resource is allowed (re-checked when it runs).",
    "denied": "Record an action the agent decided not to take, as evidence.",
    "execute": "Run a tool: the runtime checks the policy, calls the tool host, records evidence.",
    "checkpoint": "Declare a named point, citing the evidence that backs it.",
    "audit": "Add a note to the workflow's record.",
    "handoff": "Hand work to another agent by reference; completed/verified ones are claims.",
    "summarize": "The final claim: verified item by item before the workflow completes.",
    "failure": "Report a model failure; the reply is the runtime's advice (RetryAdvice).",
    "resolve": "A human's answer to an escalation (the operator identity only).",
    "artifact_put": "Store bytes (base64) as an artifact of a workflow the caller is in.",
    "artifact_get": "Read an artifact of a workflow the caller is in (digest checked).",
    "fault": "Report a failed handler (exception, undecodable input); advice: retry or stop.",
    "wait": "Wait for a named signal (operator input); replied when it arrives or already has.",
    "confirm": "Ask the tools' systems whether recorded side effects exist (operator only).",
    "cancel": "Cancel a workflow; its agents are refused with `cancelled` (operator only).",
    "terminate": "Terminate a workflow at once (operator only).",
    "retry": "Run a failed workflow's failed handling again (operator only).",
    "reset": "Continue a workflow from an event or checkpoint as a new branch (operator only).",
    "signal": "Send a named input to a workflow, waking a handling that waits (operator only).",
}


def ref(schema_file: str) -> dict[str, Any]:
    return {"$ref": schema_file}


def message(name: str, schema_file: str, summary: str) -> dict[str, Any]:
    return {"name": name, "summary": summary, "payload": ref(schema_file)}


def reply_payload(op: str) -> dict[str, Any]:
    """A :class:`Reply` whose ``result`` is this operation's reply type when ``ok``."""
    return {
        "allOf": [
            ref("Reply.schema.json"),
            {
                "type": "object",
                "properties": {"result": ref(f"{REPLIES[op].__name__}.schema.json")},
            },
        ]
    }


def parameters(*names: str) -> dict[str, Any]:
    described = {
        "prefix": "The deployment's subject prefix (CLAIMCHECK_PREFIX, default cc).",
        "agent": "The calling agent's name: its NATS user is agent-<agent>.",
        "tool": "A tool of the catalogue.",
        "workflowId": "A workflow id.",
        "eventType": "A ledger event type (WorkflowStarted, ...).",
    }
    return {name: {"description": described[name]} for name in names}


def runtime_channels() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    for op, request_type in OPERATIONS.items():
        channels[f"runtime.{op}"] = {
            "address": SUBJECTS.runtime("{agent}", op),
            "parameters": parameters("prefix", "agent"),
            "messages": {
                "request": message(
                    request_type.__name__, f"{request_type.__name__}.schema.json", f"{op} request"
                ),
            },
        }
        channels[f"runtime.{op}.reply"] = {
            "address": None,
            "description": "The requester's reply subject: for an agent, under "
            "_INBOX_agent-<name>. (its only readable inbox prefix).",
            "messages": {
                "reply": {
                    "name": f"{op}Reply",
                    "summary": f"Reply to {op}: ok with a {REPLIES[op].__name__}, or an error.",
                    "payload": reply_payload(op),
                }
            },
        }
    return channels


def other_channels() -> dict[str, Any]:
    tool_call = "ToolCall.schema.json"
    return {
        "inbox": {
            "address": SUBJECTS.inbox("{agent}"),
            "parameters": parameters("prefix", "agent"),
            "description": "The agent's inbox on the handoff stream, read only through the "
            "durable pull consumer agent-<agent> (see docs/PROTOCOL.md).",
            "messages": {"handoff": message("Handoff", "Handoff.schema.json", "Work to do")},
        },
        "tool": {
            "address": SUBJECTS.tool("{tool}"),
            "parameters": parameters("prefix", "tool"),
            "description": "Runtime to tool host only; agents cannot publish here.",
            "messages": {
                "call": message("ToolCall", tool_call, "A signed call the runtime allowed"),
                "result": message("ToolResult", "ToolResult.schema.json", "The tool's outcome"),
            },
        },
        "events": {
            "address": SUBJECTS.event("{workflowId}", "{eventType}"),
            "parameters": parameters("prefix", "workflowId", "eventType"),
            "messages": {"event": message("EventEnvelope", "EventEnvelope.schema.json", "")},
        },
        "evidence": {
            "address": SUBJECTS.evidence("{workflowId}"),
            "parameters": parameters("prefix", "workflowId"),
            "messages": {"evidence": message("Evidence", "Evidence.schema.json", "")},
        },
        "escalation": {
            "address": SUBJECTS.escalation("{workflowId}"),
            "parameters": parameters("prefix", "workflowId"),
            "messages": {"escalation": message("Escalation", "Escalation.schema.json", "")},
        },
    }


def operations() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for op in OPERATIONS:
        found[op] = {
            "action": "send",
            "summary": OPERATION_SUMMARIES[op],
            "channel": ref(f"#/channels/runtime.{op}"),
            "messages": [ref(f"#/channels/runtime.{op}/messages/request")],
            "reply": {
                "address": {
                    "location": "$message.header#/replyTo",
                    "description": "NATS request/reply: the reply subject of the request.",
                },
                "channel": ref(f"#/channels/runtime.{op}.reply"),
                "messages": [ref(f"#/channels/runtime.{op}.reply/messages/reply")],
            },
        }
    found["receiveHandoff"] = {
        "action": "receive",
        "summary": "Fetch a handoff from the inbox consumer; ack it once handled.",
        "channel": ref("#/channels/inbox"),
        "messages": [ref("#/channels/inbox/messages/handoff")],
    }
    return found


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3 document of the agent protocol."""
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "claimcheck agent protocol",
            "version": version("claimcheck"),
            "description": "How an agent in any language talks to the claimcheck runtime over "
            "NATS. Read docs/PROTOCOL.md for the order of calls, step keys, error codes, "
            "artifacts and limits.",
        },
        "defaultContentType": "application/json",
        "channels": {**runtime_channels(), **other_channels()},
        "operations": operations(),
    }


def write_json(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return path


def export_protocol(directory: Path, catalogues: Sequence[Catalogue]) -> list[Path]:
    """Write the wire types' and the catalogues' tools' JSON Schemas and the AsyncAPI document."""
    written = export_schemas(directory)
    written += export_tool_schemas(catalogues, directory)
    written.append(write_json(directory / "asyncapi.json", asyncapi()))
    return written
