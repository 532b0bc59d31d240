"""OpenTelemetry tracing: the SDK set up from the standard variables, W3C ``traceparent`` in
NATS headers, and a bounded flush at exit."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import ParamSpec, TextIO, TypeVar

import structlog
from opentelemetry import context, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    Decision,
    ParentBased,
    Sampler,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.util.types import Attributes

from meshmind.bus._settings import BusSettings

TRACER_NAME = "meshmind.bus"
TRACEPARENT = "traceparent"
_HEX = frozenset("0123456789abcdef")
_OPERATION_TYPES = {"publish": "send", "request": "send", "process": "process"}
_OPERATIONS_BEFORE_1_26 = {"publish": "publish", "request": "publish", "process": "process"}

_log = structlog.get_logger(__name__)


def _one_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"


def console_exporter(out: TextIO | None = None) -> SpanExporter:
    """An exporter writing one JSON span per line (to stderr by default), for piping."""
    return ConsoleSpanExporter(out=out or sys.stderr, formatter=_one_line)


def span_processors(settings: BusSettings) -> list[SpanProcessor]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names, in order; none when ``OTEL_SDK_DISABLED``.

    Unset, it means ``otlp`` when an OTLP endpoint is set and nothing otherwise. The OTLP
    exporter reads its own variables (endpoints, headers, timeout, compression) and exports
    in batches; the console exporter writes each span as it ends.
    """
    if settings.otel_sdk_disabled:
        return []
    names = settings.otel_traces_exporter or (["otlp"] if settings.otlp_endpoint_set else [])
    processors: list[SpanProcessor] = []
    for name in dict.fromkeys(names):
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            processors.append(BatchSpanProcessor(OTLPSpanExporter()))
        elif name == "console":
            processors.append(SimpleSpanProcessor(console_exporter()))
        elif name != "none":
            _log.warning("tracing.exporter_unsupported", exporter=name, supported="otlp,console")
    return processors


def tracer_provider(
    settings: BusSettings,
    service: str,
    *,
    version: str,
    instance_id: str,
    processors: list[SpanProcessor],
) -> TracerProvider | None:
    """A provider exporting through ``processors``, or None when there are none.

    The sampler is the SDK's own reading of ``OTEL_TRACES_SAMPLER`` and
    ``OTEL_TRACES_SAMPLER_ARG`` (parent-based always-on by default); ``OTEL_RESOURCE_ATTRIBUTES``
    adds to the resource.
    """
    if not processors:
        return None
    resource = Resource.create(
        {
            "service.name": service,
            "service.version": version,
            "service.instance.id": instance_id,
            "mesh.node": settings.node_id,
        }
    )
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def configure_tracing(
    settings: BusSettings,
    service: str,
    *,
    version: str = "",
    instance_id: str | None = None,
    exporter: SpanExporter | None = None,
) -> TracerProvider | None:
    """Install the OpenTelemetry SDK when spans are exported, and only then.

    Spans go to ``exporter`` if given (each as it ends), else where ``OTEL_TRACES_EXPORTER``
    says. Without an exporter the bus's spans are non-recording: they carry the trace id and
    the sampling decision across processes and into the logs, at a fraction of the SDK's cost.
    ``instance_id`` (``service.instance.id``) defaults to a fresh unique id. Returns the
    provider installed by this call, for :func:`flush_tracing`; None when nothing is
    exported or a provider was already installed (the first one stays).
    """
    global _active
    if installed_provider() is not None:
        return None
    provider = tracer_provider(
        settings,
        service,
        version=version,
        instance_id=instance_id or uuid.uuid4().hex,
        processors=[SimpleSpanProcessor(exporter)] if exporter else span_processors(settings),
    )
    if provider is not None:
        trace.set_tracer_provider(provider)
        _active = provider.get_tracer(TRACER_NAME)
    return provider


def installed_provider() -> TracerProvider | None:
    """The SDK provider this process exports spans through, if one is installed."""
    provider = trace.get_tracer_provider()
    return provider if isinstance(provider, TracerProvider) else None


async def flush_tracing(provider: TracerProvider, budget_s: float, *, shut_down: bool) -> bool:
    """Export the spans still buffered (then shut ``provider`` down if asked), waiting
    ``budget_s`` at most.

    The SDK's flush exports on the calling thread and waits on the collector for as long as
    the exporter's own timeout and retries allow, so it runs on a daemon thread, abandoned at
    the deadline. Returns whether the flush finished, and succeeded, in time.
    """
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[bool] = loop.create_future()

    def settle(flushed: bool) -> None:
        if not finished.done():
            finished.set_result(flushed)

    def flush() -> None:
        flushed = False
        try:
            flushed = provider.force_flush(timeout_millis=max(1, int(budget_s * 1000)))
            if shut_down:
                provider.shutdown()
        except Exception as error:  # an exporter failing at exit must not fail the exit
            _log.warning("tracing.flush_failed", error=repr(error))
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, flushed)

    threading.Thread(target=flush, name="span-flush", daemon=True).start()
    try:
        return await asyncio.wait_for(finished, budget_s)
    except TimeoutError:
        _log.warning("tracing.flush_timed_out", budget_s=budget_s)
        return False


def environment_sampler() -> Sampler:
    """The sampler ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG`` configure, as the
    SDK reads them (parent-based always-on when unset)."""
    return TracerProvider(shutdown_on_exit=False).sampler


_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_CONSTANT_ROOTS = {id(ALWAYS_ON): _SAMPLED, id(DEFAULT_ON): _SAMPLED}
_CONSTANT_ROOTS |= {id(ALWAYS_OFF): _NOT_SAMPLED, id(DEFAULT_OFF): _NOT_SAMPLED}


class PropagatingTracer(trace.Tracer):
    """A tracer for processes that export nothing: non-recording spans that keep the trace
    of their parent (or start a new one), so context still flows and logs correlate.

    The sampled flag is what ``sampler`` decides, so a process that exports nothing still
    starts traces that the processes downstream record. The SDK's own samplers whose decision
    is known in advance (always on or off for roots; following the parent under a parent-based
    sampler) are not asked for each span: on this path a span costs a few microseconds.
    """

    def __init__(self, sampler: Sampler) -> None:
        self._sampler = sampler
        self._follows_parent = isinstance(sampler, ParentBased)
        self._root_flags = _CONSTANT_ROOTS.get(id(sampler))
        static = sampler is ALWAYS_ON or sampler is ALWAYS_OFF
        self._child_flags = self._root_flags if static else None

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
            trace_id = parent.trace_id
            flags = parent.trace_flags if self._follows_parent else self._child_flags
        else:
            trace_id = random.getrandbits(128) or 1
            flags = self._root_flags
        if flags is None:
            result = self._sampler.should_sample(context, trace_id, name, kind, attributes)
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
            flags = _SAMPLED if sampled else _NOT_SAMPLED
        return NonRecordingSpan(SpanContext(trace_id, random.getrandbits(64) or 1, False, flags))

    def start_as_current_span(  # type: ignore[override]
        self, name: str, context: context.Context | None = None, *args: object, **kwargs: object
    ) -> Iterator[trace.Span]:
        return trace.use_span(self.start_span(name, context), end_on_exit=True)  # type: ignore[return-value]


_active: trace.Tracer | None = None


def tracer() -> trace.Tracer:
    """The SDK's tracer when spans are exported, a :class:`PropagatingTracer` otherwise."""
    global _active
    if _active is None:
        provider = installed_provider()
        if provider is not None:
            _active = provider.get_tracer(TRACER_NAME)
        else:
            _active = PropagatingTracer(environment_sampler())
    return _active


P = ParamSpec("P")
T = TypeVar("T")


def traced(name: str) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Run each call of the decorated coroutine function in a span ``name`` of its own, so the
    messages it sends, and what they cause elsewhere, are one trace."""

    def decorate(work: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(work)
        async def in_span(*args: P.args, **kwargs: P.kwargs) -> T:
            with activated(tracer().start_span(name)):
                return await work(*args, **kwargs)

        return in_span

    return decorate


def message_attributes(operation: str, subject: str, template: str) -> dict[str, str]:
    """OpenTelemetry's messaging attributes for ``operation`` (publish, request or process)
    on ``subject``, declared in the contract as ``template``.

    Both the current conventions (``messaging.operation.type`` and ``.name``) and the
    ``messaging.operation`` of conventions before 1.26, which many backends still index.
    """
    return {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.destination.template": template,
        "messaging.operation.name": operation,
        "messaging.operation.type": _OPERATION_TYPES[operation],
        "messaging.operation": _OPERATIONS_BEFORE_1_26[operation],
    }


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
