"""OpenTelemetry tracing: provider set-up and W3C ``traceparent`` in NATS headers."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator, Mapping
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
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.util.types import Attributes

from meshmind.bus._settings import BusSettings

TRACER_NAME = "meshmind.bus"
TRACEPARENT = "traceparent"
_HEX = frozenset("0123456789abcdef")


def _one_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"


def console_exporter(out: TextIO = sys.stderr) -> SpanExporter:
    """An exporter writing one JSON span per line, for piping into other tools."""
    return ConsoleSpanExporter(out=out, formatter=_one_line)


def configure_tracing(
    settings: BusSettings, service: str, *, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Install the OpenTelemetry SDK when spans are exported, and only then.

    Spans are exported through ``exporter``, else as ``OTEL_TRACES_EXPORTER`` says (``otlp``
    by default once ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set). Without an exporter the bus's
    spans are non-recording: they still carry the trace id across processes and into the
    logs, at a fraction of the SDK's cost per span. The first provider installed stays.
    """
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    kind = (
        "given"
        if exporter
        else settings.otel_traces_exporter
        or ("otlp" if settings.otel_exporter_otlp_endpoint else "none")
    )
    if kind == "none":
        return None
    resource = Resource.create(
        {
            "service.name": service,
            "service.instance.id": settings.node_id,
            "mesh.node": settings.node_id,
        }
    )
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif kind == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(console_exporter()))
    trace.set_tracer_provider(provider)
    return provider


class PropagatingTracer(trace.Tracer):
    """A tracer for processes that export nothing: non-recording spans that keep the trace
    id of their parent (or start a new trace), so context still flows and logs correlate."""

    def start_span(
        self,
        name: str,
        context: context.Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Attributes = None,
        *args: object,
        **kwargs: object,
    ) -> trace.Span:
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            trace_id, flags = parent.trace_id, parent.trace_flags
        else:
            trace_id, flags = random.getrandbits(128) or 1, TraceFlags(TraceFlags.DEFAULT)
        return NonRecordingSpan(SpanContext(trace_id, random.getrandbits(64) or 1, False, flags))

    def start_as_current_span(  # type: ignore[override]
        self, name: str, context: context.Context | None = None, *args: object, **kwargs: object
    ) -> Iterator[trace.Span]:
        return trace.use_span(self.start_span(name, context), end_on_exit=True)  # type: ignore[return-value]


_PROPAGATING = PropagatingTracer()


def tracer() -> trace.Tracer:
    """The SDK's tracer when spans are exported, the propagating tracer otherwise."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return trace.get_tracer(TRACER_NAME)
    return _PROPAGATING


def inject(headers: dict[str, str], span: trace.Span | None = None) -> dict[str, str]:
    """Add the W3C ``traceparent`` of ``span`` (or of the current span) to ``headers``."""
    span_context = (span or trace.get_current_span()).get_span_context()
    if span_context.is_valid:
        headers[TRACEPARENT] = (
            f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
            f"{span_context.trace_flags:02x}"
        )
    return headers


def extract(headers: Mapping[str, str] | None) -> context.Context | None:
    """The trace context a W3C ``traceparent`` header carries; None when absent or invalid.

    Parsed here rather than by the SDK's propagator: it is the hot path of every message,
    and the propagator's regular expression and context copies cost several times more.
    """
    value = headers.get(TRACEPARENT) if headers else None
    if value is None or len(value) != 55:
        return None
    version, trace_hex, span_hex, flags_hex = value[0:2], value[3:35], value[36:52], value[53:55]
    if version == "ff" or value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    if not _HEX.issuperset(version + trace_hex + span_hex + flags_hex):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    parent = SpanContext(trace_id, span_id, True, TraceFlags(int(flags_hex, 16)))
    return trace.set_span_in_context(NonRecordingSpan(parent))


def current_trace_id() -> str | None:
    """The current span's trace id as 32 hex digits, if there is a span."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x")


class activated:
    """Make ``span`` current for the block and end it after, recording any exception."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self._token: object = None

    def __enter__(self) -> trace.Span:
        self._token = context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        context.detach(self._token)  # type: ignore[arg-type]
        if exc is not None:
            self._span.record_exception(exc)
            self._span.set_status(trace.Status(trace.StatusCode.ERROR, repr(exc)))
        self._span.end()
