"""One trace follows a request across processes: W3C traceparent in NATS headers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from meshmind.lab import LocalMesh
from tests.conftest import Connect
from tests.kit.echo import ECHO, EchoReply, EchoRequest
from tests.kit.waiting import request_when_served

ROOT = Path(__file__).resolve().parents[2]


def start_echo_process(mesh: LocalMesh, node: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.kit.echo"],
        cwd=ROOT,
        env={
            **os.environ,
            "NODE_ID": node,
            "NATS_URL": mesh.host(node).url,
            "PYTHONPATH": str(ROOT),
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def test_one_request_across_two_processes_is_one_trace(
    mesh: LocalMesh, connect: Connect, spans: InMemorySpanExporter
) -> None:
    server = start_echo_process(mesh, "n1", OTEL_TRACES_EXPORTER="console")
    try:
        client = await connect("n3")
        with trace.get_tracer("test").start_as_current_span("operator action"):
            reply = await request_when_served(
                client, ECHO, EchoRequest(text="t"), node="n1", within=20
            )
        assert reply == EchoReply(text="t", node="n1")
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=20)
    assert server.returncode == 0, stderr.decode()[-2000:]

    *_, client_span = (
        s
        for s in spans.get_finished_spans()  # the last try was answered
        if s.name == "request mesh.test.echo.{node}"
    )
    server_spans = [
        json.loads(line)
        for line in stderr.decode().splitlines()
        if line.startswith("{") and '"context"' in line
    ]
    [handled] = [s for s in server_spans if s["name"] == "process mesh.test.echo.{node}"]
    client_trace = format(client_span.context.trace_id, "032x")
    assert handled["context"]["trace_id"] == f"0x{client_trace}"
    assert handled["parent_id"] == f"0x{client_span.context.span_id:016x}"
    assert handled["kind"] == "SpanKind.SERVER"
    assert handled["resource"]["attributes"]["service.instance.id"] == "n1"
