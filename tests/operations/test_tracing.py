"""One workflow is one OpenTelemetry trace across the CLI, the runtime, the tool host and two
agent processes, with GenAI span names and attributes, and its trace id in the ledger."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bus.ledger import Ledger
from bus.operations.mailbox import Mailbox
from bus.operations.operators import watch
from bus.operations.stack import Stack
from bus.settings import Settings
from bus.transport.connection import connect
from bus.transport.subjects import Subjects

pytest.importorskip("opentelemetry.sdk", reason="tracing needs the otel extra")


def spans_in(directory: Path) -> list[dict]:
    return [
        json.loads(line)
        for path in directory.glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]


async def test_one_workflow_is_one_trace_across_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mailbox: Mailbox
) -> None:
    traces = tmp_path / "spans"
    monkeypatch.setenv("CLAIMCHECK_TRACE_DIR", str(traces))
    settings = Settings(state_dir=tmp_path / "state", smtp_port=mailbox.port)
    complaint = tmp_path / "complaint.json"
    complaint.write_text(json.dumps({"customer": "northwind", "text": "outage, refund now"}))
    async with Stack(settings) as stack:
        submitted = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "bus.operations.cli",
                "submit",
                "triage_complaint",
                "--to",
                "triage",
                "--input",
                str(complaint),
                "--state-dir",
                str(settings.state_dir),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=os.environ.copy(),
        )
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        workflow_id = submitted.stdout.strip()
        nc = await connect(settings, "test")
        view = await watch(nc, Subjects(settings.prefix), workflow_id)
        await nc.close()
        assert view.status == "completed"
        assert stack.processes

    spans = spans_in(traces)
    [root] = [s for s in spans if s["name"] == "submit triage_complaint"]
    trace_id = root["trace_id"]
    ours = [s for s in spans if s["trace_id"] == trace_id]
    by_name: dict[str, list[dict]] = {}
    for span in ours:
        by_name.setdefault(span["name"], []).append(span)
    assert {
        "claimcheck-cli",
        "claimcheck-runtime",
        "claimcheck-tools",
        "claimcheck-agent-triage",
        "claimcheck-agent-notifier",
    } <= {s["service"] for s in ours}
    assert not [
        s
        for s in spans
        if s["name"].startswith(("invoke_agent", "chat")) and s["trace_id"] != trace_id
    ]

    def parent_of(span: dict) -> dict:
        [parent] = [s for s in ours if s["span_id"] == span["parent_id"]]
        return parent

    [start] = by_name["start_workflow triage_complaint"]
    [triage] = by_name["invoke_agent triage"]
    [notifier] = by_name["invoke_agent notifier"]
    assert parent_of(start) == root
    assert parent_of(triage) == start
    assert parent_of(notifier) == triage  # joined through the handoff the relay delivered
    for chat in by_name["chat scripted"]:
        assert parent_of(chat)["name"].startswith("invoke_agent")
        attributes = chat["attributes"]
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.request.model"] == "scripted"
        assert (
            attributes["gen_ai.usage.input_tokens"] > 0
            and "gen_ai.usage.output_tokens" in attributes
        )
        assert json.loads(attributes["claimcheck.belief"])
    assert len(by_name["chat scripted"]) == 2
    for tool in ("create_ticket", "send_email"):
        runtime_span, host_span = sorted(
            by_name[f"execute_tool {tool}"], key=lambda s: s["service"]
        )
        assert (runtime_span["service"], host_span["service"]) == (
            "claimcheck-runtime",
            "claimcheck-tools",
        )
        assert parent_of(host_span) == runtime_span
        assert parent_of(runtime_span)["name"].startswith("invoke_agent")
        assert runtime_span["attributes"]["gen_ai.tool.name"] == tool
        assert runtime_span["attributes"]["gen_ai.operation.name"] == "execute_tool"

    ledger = Ledger.from_url(settings.ledger_url())
    try:
        history = ledger.history(workflow_id)
    finally:
        ledger.close()
    assert history[0].data["trace_id"] == trace_id
    assert {e.data["trace_id"] for e in history if e.type == "StepCompleted"} == {trace_id}

    shown = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "bus.operations.cli",
            "trace",
            workflow_id,
            "--state-dir",
            str(settings.state_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"trace {trace_id}" in shown.stdout
    assert "believed" in shown.stdout and "executed send_email" in shown.stdout


def test_spans_go_over_otlp_when_the_standard_variables_are_set(tmp_path: Path) -> None:
    """A local OTLP/HTTP receiver gets the spans of a process configured by OTEL_* alone."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[bytes] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    Thread(target=server.serve_forever, daemon=True).start()
    program = (
        "from bus import telemetry\n"
        "telemetry.setup('claimcheck-test')\n"
        "with telemetry.span('chat scripted', **{'gen_ai.operation.name': 'chat'}):\n"
        "    pass\n"
        "telemetry.shutdown()\n"
    )
    environment = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
    }
    environment.pop("CLAIMCHECK_TRACE_DIR", None)
    try:
        result = subprocess.run(
            [sys.executable, "-c", program],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    request = ExportTraceServiceRequest.FromString(received[0])
    [resource_spans] = request.resource_spans
    [span] = resource_spans.scope_spans[0].spans
    assert span.name == "chat scripted"
    assert {a.key: a.value.string_value for a in span.attributes}["gen_ai.operation.name"] == "chat"


def test_without_configuration_tracing_records_nothing(tmp_path: Path) -> None:
    program = (
        "from bus import telemetry\n"
        "telemetry.setup('claimcheck-test')\n"
        "with telemetry.span('chat scripted') as span:\n"
        "    assert span is None\n"
        "assert telemetry.headers() == {}\n"
    )
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAIMCHECK_TRACE"))
    }
    result = subprocess.run(
        [sys.executable, "-c", program], env=environment, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
