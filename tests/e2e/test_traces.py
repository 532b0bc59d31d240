"""Traces an operator can follow on a lab whose services export spans: a failed probe, the link
event it causes and that event's consumer are one trace; a meshctl command is the root of the
spans its requests cause in the services."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext

from meshmind.bus import Bus, BusError, Empty
from meshmind.bus.protocol import HEALTH_LINKS, LINK_CHANGES, LinkChange, LinkReport
from meshmind.lab import LocalMesh, node_names
from tests.kit.labs import observed_lab
from tests.kit.waiting import eventually

NODES = node_names(3)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def traced_lab(tmp_path: Path) -> AsyncIterator[tuple[LocalMesh, Bus]]:
    """A 3-host lab whose services write every span as a JSON line to their logs."""
    env = {"OTEL_TRACES_EXPORTER": "console", "PROBE_INTERVAL_S": "0.5", "LOG_LEVEL": "info"}
    async with observed_lab(tmp_path / "lab", NODES, service_env=env) as (mesh, hub):
        await mesh.start_services()
        yield mesh, hub


def logged_spans(path: Path) -> dict[str, dict[str, Any]]:
    """The spans a service wrote to its log, by span id (``0x`` and 16 hex digits)."""
    found = {}
    for line in path.read_text().splitlines():
        if line.startswith("{") and '"context"' in line:
            span = json.loads(line)
            found[span["context"]["span_id"]] = span
    return found


async def n1_links(hub: Bus) -> list[LinkReport]:
    """The links n1's monitor measures; none while it is not serving yet."""
    try:
        return (await hub.request(HEALTH_LINKS, Empty(), node="n1", timeout=5)).links
    except BusError:
        return []


def hex_id(span_id: int) -> str:
    return f"0x{span_id:016x}"


async def test_a_failed_probe_its_link_event_and_the_events_consumer_are_one_trace(
    traced_lab: tuple[LocalMesh, Bus], spans: InMemorySpanExporter
) -> None:
    mesh, hub = traced_lab
    consumed: list[SpanContext] = []

    async def on_change(change: LinkChange) -> None:
        if change.link.target == "n3" and change.link.state == "down":
            consumed.append(trace.get_current_span().get_span_context())

    await hub.subscribe(LINK_CHANGES, on_change, node="n1")

    async def n1_measures_n3() -> bool:
        links = await n1_links(hub)
        return any(link.target == "n3" and link.state == "good" for link in links)

    await eventually(n1_measures_n3, within=60, every=0.5)
    await mesh.kill_services("n3")
    await eventually(lambda: consumed, within=30)

    [consumer] = [s for s in spans.get_finished_spans() if s.context == consumed[0]]
    assert consumer.name == "process mesh.health.{node}.link"
    assert consumer.parent is not None
    monitor = logged_spans(mesh.run_dir / "n1" / "meshmind_health_monitor.log")
    published = monitor[hex_id(consumer.parent.span_id)]  # the parent is in n1's monitor
    assert published["name"] == "publish mesh.health.{node}.link"
    assert published["attributes"]["messaging.destination.name"] == "mesh.health.n1.link"
    probe = monitor[published["parent_id"]]
    assert probe["name"] == "probe"
    assert probe["parent_id"] is None  # the trace starts at the probe
    children = [s for s in monitor.values() if s["parent_id"] == probe["context"]["span_id"]]
    [request] = [s for s in children if s["name"] == "request mesh.health.{node}.probe"]
    assert request["attributes"]["messaging.destination.name"] == "mesh.health.n3.probe"
    assert request["status"]["status_code"] == "ERROR"  # nobody answered: the probe failed
    trace_id = f"0x{consumer.context.trace_id:032x}"
    assert {published["context"]["trace_id"], probe["context"]["trace_id"]} == {trace_id}
    assert request["context"]["trace_id"] == trace_id


async def test_a_meshctl_command_is_the_root_of_what_its_requests_cause(
    traced_lab: tuple[LocalMesh, Bus],
) -> None:
    mesh, hub = traced_lab

    async def n1_sees_everyone() -> bool:
        return len(await n1_links(hub)) == len(NODES) - 1

    await eventually(n1_sees_everyone, within=60, every=0.5)
    ctl = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "meshmind.ctl", "peers", "--node", "n1", "--url", mesh.hub_url],
        cwd=ROOT,
        env={**os.environ, "OTEL_TRACES_EXPORTER": "console"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ctl.returncode == 0, ctl.stderr[-2000:]
    ctl_spans = [json.loads(line) for line in ctl.stderr.splitlines() if line.startswith("{")]
    [command] = [s for s in ctl_spans if s["name"] == "meshctl peers"]
    assert command["parent_id"] is None
    assert command["resource"]["attributes"]["service.name"] == "meshctl"
    [request] = [s for s in ctl_spans if s["name"] == "request mesh.discovery.{node}.peers"]
    assert request["parent_id"] == command["context"]["span_id"]

    discovery = logged_spans(mesh.run_dir / "n1" / "meshmind_discovery.log")
    [answered] = [s for s in discovery.values() if s["parent_id"] == request["context"]["span_id"]]
    assert answered["name"] == "process mesh.discovery.{node}.peers"
    assert answered["context"]["trace_id"] == command["context"]["trace_id"]
