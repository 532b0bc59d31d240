"""OpenTelemetry tracing: provider set-up and W3C ``traceparent`` in NATS headers."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TextIO

from opentelemetry import context, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from meshmind.bus._settings import BusSettings

_PROPAGATOR = TraceContextTextMapPropagator()
TRACER_NAME = "meshmind.bus"


def _one_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"


def console_exporter(out: TextIO = sys.stderr) -> SpanExporter:
    """An exporter writing one JSON span per line, for piping into other tools."""
    return ConsoleSpanExporter(out=out, formatter=_one_line)


def configure_tracing(settings: BusSettings, service: str) -> TracerProvider:
    """Install the process's tracer provider; export only where the settings ask for it.

    Spans are always created, so trace context flows through a process that exports
    nothing; the first call wins, later calls return the installed provider.
    """
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    resource = Resource.create(
        {
            "service.name": service,
            "service.instance.id": settings.node_id,
            "mesh.node": settings.node_id,
        }
    )
    provider = TracerProvider(resource=resource)
    exporter = settings.otel_traces_exporter or (
        "otlp" if settings.otel_exporter_otlp_endpoint else "none"
    )
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(console_exporter()))
    trace.set_tracer_provider(provider)
    return provider


def tracer() -> trace.Tracer:
    """The bus's tracer (from whichever provider is installed)."""
    return trace.get_tracer(TRACER_NAME)


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current span's ``traceparent`` (lower-case key) to ``headers``."""
    _PROPAGATOR.inject(headers)
    return headers


def extract(headers: Mapping[str, str] | None) -> context.Context | None:
    """The trace context carried by ``headers``, if any."""
    if not headers:
        return None
    return _PROPAGATOR.extract(headers)


def current_trace_id() -> str | None:
    """The current span's trace id as 32 hex digits, if a span is recording."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x")
