"""OpenTelemetry tracing, optional: one workflow is one trace across every process.

Install the ``otel`` extra and set the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``
(or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) to export spans over OTLP/HTTP, or
set ``CLAIMCHECK_TRACE_DIR`` to write them as JSON lines (one file per
process). Otherwise nothing is recorded and nothing is imported.

Spans follow the GenAI semantic conventions: ``invoke_agent {agent}`` around a
handoff's handler, ``chat {model}`` around a model call (with ``gen_ai.usage.*``
and the belief the model returned), and ``execute_tool {tool}`` in the runtime
and the tool host. The W3C ``traceparent`` travels in NATS message headers,
including the handoffs the relay delivers, which is what joins the processes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the otel extra is not installed: tracing is off
    trace = None  # type: ignore[assignment]

TRACEPARENT = "traceparent"
_enabled = False


def setup(service: str) -> None:
    """Configure exporting for this process, if the environment asks for it."""
    global _enabled
    exporters = exporters_from_environment()
    if trace is None or not exporters:
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    for exporter in exporters:
        is_file = isinstance(exporter, JsonLinesExporter)
        provider.add_span_processor(
            SimpleSpanProcessor(exporter) if is_file else BatchSpanProcessor(exporter)
        )
    trace.set_tracer_provider(provider)
    _enabled = True


def exporters_from_environment() -> list[Any]:
    if trace is None:
        return []
    found: list[Any] = []
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        found.append(OTLPSpanExporter())
    if os.environ.get("CLAIMCHECK_TRACE_DIR"):
        found.append(JsonLinesExporter(Path(os.environ["CLAIMCHECK_TRACE_DIR"])))
    return found


def shutdown() -> None:
    if _enabled and trace is not None:
        trace.get_tracer_provider().shutdown()  # type: ignore[attr-defined]


@contextlib.contextmanager
def span(
    name: str, headers: Mapping[str, str] | None = None, kind: str = "INTERNAL", **attributes: Any
) -> Iterator[Any]:
    """A span named ``name``, child of the context in ``headers`` (or the current one)."""
    if not _enabled or trace is None:
        yield None
        return
    parent = TraceContextTextMapPropagator().extract(dict(headers)) if headers else None
    tracer = trace.get_tracer("claimcheck")
    with tracer.start_as_current_span(
        name,
        context=parent,
        kind=getattr(trace.SpanKind, kind),
        attributes={k: v for k, v in attributes.items() if v is not None},
    ) as current:
        yield current


def set_attributes(current: Any, **attributes: Any) -> None:
    if current is not None:
        current.set_attributes({k: v for k, v in attributes.items() if v is not None})


def headers(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """NATS headers carrying the current trace context (and ``extra``)."""
    carrier = dict(extra or {})
    if _enabled and trace is not None:
        TraceContextTextMapPropagator().inject(carrier)
    return carrier


def traceparent(incoming: Mapping[str, str] | None = None) -> str:
    """The W3C traceparent of ``incoming`` headers, else of the current span ("" if none)."""
    if incoming and incoming.get(TRACEPARENT):
        return incoming[TRACEPARENT]
    return headers().get(TRACEPARENT, "")


def trace_id(parent: str) -> str:
    """The trace id inside a traceparent (``00-<trace id>-<span id>-<flags>``)."""
    parts = parent.split("-")
    return parts[1] if len(parts) == 4 else ""


@contextlib.contextmanager
def attached(headers_: Mapping[str, str] | None) -> Iterator[None]:
    """Run with the trace context of ``headers_`` as the current one."""
    if not _enabled or trace is None or not headers_:
        yield
        return
    token = otel_context.attach(TraceContextTextMapPropagator().extract(dict(headers_)))
    try:
        yield
    finally:
        otel_context.detach(token)


class JsonLinesExporter:
    """Writes finished spans as JSON lines, one file per process: for tests and debugging."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"spans-{os.getpid()}.jsonl"

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        with self.path.open("a") as file:
            for finished in spans:
                parent = finished.parent
                file.write(
                    json.dumps(
                        {
                            "name": finished.name,
                            "trace_id": format(finished.context.trace_id, "032x"),
                            "span_id": format(finished.context.span_id, "016x"),
                            "parent_id": format(parent.span_id, "016x") if parent else None,
                            "service": finished.resource.attributes.get("service.name"),
                            "attributes": dict(finished.attributes or {}),
                        }
                    )
                    + "\n"
                )
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True
