"""Tracing follows the OpenTelemetry environment variables: exporters, endpoints, sampler,
resource; and a root span carries the sampling decision even when nothing is exported."""

from __future__ import annotations

import http.server
import json
import random
import socket
import threading
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from meshmind.bus import BusSettings
from meshmind.bus._tracing import (
    PropagatingTracer,
    environment_sampler,
    flush_tracing,
    span_processors,
    tracer_provider,
)


class Collector:
    """An OTLP/HTTP endpoint on loopback that accepts every export and remembers its path."""

    def __init__(self) -> None:
        paths: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.paths = paths
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(autouse=True)
def _no_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def collector() -> Iterator[Collector]:
    running = Collector()
    yield running
    running.close()


def provider_from_environment() -> TracerProvider | None:
    settings = BusSettings(node_id="n1")
    return tracer_provider(
        settings, "svc", version="1.2.3", instance_id="svc-1", processors=span_processors(settings)
    )


def end_one_span(provider: TracerProvider, name: str = "work") -> None:
    provider.get_tracer("test").start_span(name).end()
    provider.force_flush()


def console_spans(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_nothing_is_exported_when_no_variable_is_set() -> None:
    assert provider_from_environment() is None


def test_a_traces_endpoint_alone_turns_otlp_export_on_to_that_url(
    monkeypatch: pytest.MonkeyPatch, collector: Collector
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{collector.url}/custom/traces")
    provider = provider_from_environment()
    assert provider is not None
    end_one_span(provider)
    assert collector.paths == ["/custom/traces"]


def test_the_general_endpoint_exports_to_its_traces_path(
    monkeypatch: pytest.MonkeyPatch, collector: Collector
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    provider = provider_from_environment()
    assert provider is not None
    end_one_span(provider)
    assert collector.paths == ["/v1/traces"]


def test_otlp_and_console_together_export_each_span_to_both(
    monkeypatch: pytest.MonkeyPatch, collector: Collector, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp,console")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    provider = provider_from_environment()
    assert provider is not None
    end_one_span(provider, "both")
    assert collector.paths == ["/v1/traces"]
    assert [s["name"] for s in console_spans(capsys.readouterr().err)] == ["both"]


def test_an_unsupported_exporter_is_skipped_and_the_others_still_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin,console")
    provider = provider_from_environment()
    assert provider is not None
    end_one_span(provider, "kept")
    assert [s["name"] for s in console_spans(capsys.readouterr().err)] == ["kept"]


@pytest.mark.parametrize(
    ("variable", "value"), [("OTEL_TRACES_EXPORTER", "none"), ("OTEL_SDK_DISABLED", "true")]
)
def test_none_and_sdk_disabled_turn_export_off_even_with_an_endpoint(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv(variable, value)
    assert provider_from_environment() is None


def test_the_resource_names_the_instance_and_version_and_takes_resource_attributes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=lab")
    provider = provider_from_environment()
    assert provider is not None
    end_one_span(provider)
    [span] = console_spans(capsys.readouterr().err)
    resource = span["resource"]["attributes"]  # type: ignore[index]
    assert resource["service.name"] == "svc"
    assert resource["service.version"] == "1.2.3"
    assert resource["service.instance.id"] == "svc-1"
    assert resource["mesh.node"] == "n1"
    assert resource["deployment.environment.name"] == "lab"


def test_sampler_always_off_exports_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    provider = provider_from_environment()
    assert provider is not None
    end_one_span(provider)
    assert console_spans(capsys.readouterr().err) == []


def root_flags(tracer: trace.Tracer, count: int) -> list[bool]:
    return [
        bool(tracer.start_span("root").get_span_context().trace_flags.sampled) for _ in range(count)
    ]


def child_sampled(tracer: trace.Tracer, parent_sampled: bool) -> bool:
    flags = TraceFlags(TraceFlags.SAMPLED if parent_sampled else TraceFlags.DEFAULT)
    parent = trace.set_span_in_context(NonRecordingSpan(SpanContext(7, 9, True, flags)))
    span_context = tracer.start_span("child", parent).get_span_context()
    assert span_context.trace_id == 7
    return bool(span_context.trace_flags.sampled)


def test_without_export_roots_are_sampled_by_default_and_children_follow_their_parent() -> None:
    tracer = PropagatingTracer(environment_sampler())
    assert all(root_flags(tracer, 100))
    assert child_sampled(tracer, parent_sampled=True)
    assert not child_sampled(tracer, parent_sampled=False)


def test_without_export_always_off_leaves_roots_unsampled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    assert not any(root_flags(PropagatingTracer(environment_sampler()), 100))


@pytest.mark.parametrize("seed", range(5))
def test_without_export_a_ratio_samples_that_share_of_roots_and_follows_parents(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    tracer = PropagatingTracer(environment_sampler())
    random.seed(seed)
    sampled = sum(root_flags(tracer, 4000))
    assert 300 < sampled < 500, f"seed {seed}: {sampled} of 4000 roots sampled"
    assert child_sampled(tracer, parent_sampled=True)
    assert not child_sampled(tracer, parent_sampled=False)


async def test_a_flush_to_a_collector_that_never_answers_gives_up_at_its_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{port}/")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "60")
        provider = provider_from_environment()
        assert provider is not None
        provider.get_tracer("test").start_span("stuck").end()
        assert await flush_tracing(provider, 0.3, shut_down=True) is False
    finally:
        silent.close()
