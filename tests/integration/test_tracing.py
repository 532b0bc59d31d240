"""One trace follows a request across processes (W3C traceparent in NATS headers), events sent
while handling a message join its trace, and a silent collector cannot hold up shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from meshmind.lab import LocalMesh
from tests.conftest import Connect
from tests.kit.echo import ECHO, PINGS, EchoReply, EchoRequest, Ping
from tests.kit.waiting import eventually, request_when_served

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


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects among a process's output lines (log lines and console spans)."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            document = json.loads(line)
            if isinstance(document, dict):
                found.append(document)
    return found


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
    assert client_span.attributes is not None
    assert client_span.attributes["messaging.system"] == "nats"
    assert client_span.attributes["messaging.destination.name"] == "mesh.test.echo.n1"
    assert client_span.attributes["messaging.operation.type"] == "send"
    assert client_span.attributes["messaging.operation.name"] == "request"

    output = json_lines(stderr.decode())
    [handled] = [s for s in output if s.get("name") == "process mesh.test.echo.{node}"]
    client_trace = format(client_span.context.trace_id, "032x")
    assert handled["context"]["trace_id"] == f"0x{client_trace}"
    assert handled["parent_id"] == f"0x{client_span.context.span_id:016x}"
    assert handled["kind"] == "SpanKind.SERVER"
    assert handled["attributes"]["messaging.system"] == "nats"
    assert handled["attributes"]["messaging.destination.name"] == "mesh.test.echo.n1"
    assert handled["attributes"]["messaging.operation.type"] == "process"

    [started] = [line for line in output if line.get("event") == "service.started"]
    resource = handled["resource"]["attributes"]
    assert resource["service.instance.id"] == started["instance"]  # as $SRV.PING shows it
    assert resource["service.version"] == "1.0.0"
    assert resource["mesh.node"] == "n1"


async def test_an_event_published_by_a_handler_continues_the_handled_message_trace(
    mesh: LocalMesh, connect: Connect, spans: InMemorySpanExporter
) -> None:
    n1, n2 = await connect("n1"), await connect("n2")
    relayed: list[Ping] = []

    async def relay(ping: Ping) -> None:
        await n1.publish(PINGS, Ping(seq=ping.seq, origin="n1"), node="n1")

    async def heard(ping: Ping) -> None:
        relayed.append(ping)

    await n1.subscribe(PINGS, relay, node="n2")
    await n2.subscribe(PINGS, heard, node="n1")

    async def relayed_once() -> bool:
        await n2.publish(PINGS, Ping(seq=1, origin="n2"), node="n2")
        await asyncio.sleep(0.1)
        return bool(relayed)

    await eventually(relayed_once, within=10)

    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}
    [*_, consumed] = [
        s
        for s in finished
        if s.name == "process mesh.test.ping.{node}"
        and s.attributes
        and s.attributes["messaging.destination.name"] == "mesh.test.ping.n1"
    ]
    assert consumed.parent is not None
    relay_publish = by_id[consumed.parent.span_id]
    assert relay_publish.name == "publish mesh.test.ping.{node}"
    assert relay_publish.attributes is not None
    assert relay_publish.attributes["messaging.operation.type"] == "send"
    assert relay_publish.parent is not None
    handling = by_id[relay_publish.parent.span_id]
    assert handling.name == "process mesh.test.ping.{node}"
    assert handling.attributes is not None
    assert handling.attributes["messaging.destination.name"] == "mesh.test.ping.n2"
    assert handling.parent is not None
    first_publish = by_id[handling.parent.span_id]
    assert first_publish.name == "publish mesh.test.ping.{node}"
    assert first_publish.parent is None  # the root: one trace from n2's ping to n2's hearing
    assert {s.context.trace_id for s in (consumed, relay_publish, handling, first_publish)} == {
        first_publish.context.trace_id
    }


DRAIN_TIMEOUT_S = 2.0


async def test_a_collector_that_never_answers_does_not_hold_up_shutdown(
    mesh: LocalMesh, connect: Connect
) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody ever answers
    port = silent.getsockname()[1]
    server = start_echo_process(
        mesh,
        "n1",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{port}/v1/traces",
        OTEL_EXPORTER_OTLP_TRACES_TIMEOUT="60",  # seconds in this SDK: a minute per export
        DRAIN_TIMEOUT_S=str(DRAIN_TIMEOUT_S),
    )
    try:
        client = await connect("n2")
        for text in ("one", "two", "three"):  # spans waiting in the exporter's batch
            await request_when_served(client, ECHO, EchoRequest(text=text), node="n1", within=20)
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(server.wait, 60)
        took = time.monotonic() - signalled
    finally:
        if server.poll() is None:
            server.kill()
        _, stderr = server.communicate()
        silent.close()
    assert returncode == 0, stderr.decode()[-2000:]
    # the budget, the spans' last half second, and interpreter exit on a loaded machine
    assert took < DRAIN_TIMEOUT_S + 8, f"exited {took:.1f}s after SIGTERM"
    assert "tracing.flush_timed_out" in stderr.decode()
