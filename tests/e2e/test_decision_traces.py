"""On a 5-host lab whose services export their spans: degrading a host's link ends in a
committed, executed decision about that link; a healing is one trace from the membership event
through the votes and the consensus commit to the lab's action, across services."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from meshmind.bus.protocol import LinkShape
from meshmind.lab import node_names
from tests.kit.decision import DecisionLab, decision_lab
from tests.kit.waiting import eventually

NODES = node_names(5)
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def lab(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DecisionLab]:
    run_dir = tmp_path_factory.mktemp("traces") / "lab"
    async with decision_lab(run_dir, NODES, OTEL_TRACES_EXPORTER="console") as running:
        yield running


def logged_spans(run_dir: Path) -> list[dict[str, Any]]:
    """Every span the lab's services wrote to their logs."""
    found = []
    for log in run_dir.glob("n*/meshmind_*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"context"' in line:
                found.append(json.loads(line))
    return found


@pytest.mark.timeout(400)
async def test_a_degraded_link_ends_in_a_committed_executed_decision_about_it(
    lab: DecisionLab,
) -> None:
    lab.mesh.host("n5").link.set_shape(LinkShape(delay_ms=200))
    try:

        def about_n5() -> list[Any]:
            return [
                e
                for e in lab.of_kind("executed")
                if "link" in e.record.anomaly.kind and "n5" in e.record.anomaly.subject.split(".")
            ]

        await eventually(about_n5, within=120, every=0.5)
    finally:
        lab.mesh.host("n5").link.set_shape(LinkShape())
    [executed, *_] = about_n5()
    record = executed.record
    assert record.target == "n5"  # blamed on the slow host, not on the one that measured it
    assert record.action in ("transfer-leadership", "demote-voter")
    assert sum(v.approve for v in record.votes) >= record.quorum
    assert record.executed is not None
    assert len(lab.committed(record.key)) == 1


@pytest.mark.timeout(400)
async def test_a_healing_is_one_trace_from_the_departure_to_the_action(
    lab: DecisionLab, spans: InMemorySpanExporter
) -> None:
    await lab.mesh.kill_services("n4")
    await eventually(lambda: lab.of_kind("executed", "host-gone/n4/"), within=120, every=0.5)
    [committed] = lab.committed("host-gone/n4/")
    trace_id = lab.traces[lab.events.index(committed)]
    hex_trace = f"0x{trace_id:032x}"

    def in_trace_now() -> list[dict[str, Any]]:
        return [s for s in logged_spans(lab.mesh.run_dir) if s["context"]["trace_id"] == hex_trace]

    def lab_action_logged() -> bool:  # exporters write in batches: wait for the whole trace
        names = {s["name"] for s in in_trace_now()}
        return "process mesh.consensus.{node}.cas" in names and len(names) >= 6

    await eventually(lab_action_logged, within=30, every=1)
    in_trace = in_trace_now()
    names = {s["name"] for s in in_trace}
    services = {s["resource"]["attributes"]["service.name"] for s in in_trace}
    lab_spans = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]

    roots = [s for s in in_trace if s["parent_id"] is None]
    assert [r["name"] for r in roots] == ["publish mesh.peers.{observer}.changes"]
    assert roots[0]["resource"]["attributes"]["service.name"] == "meshmind-discovery"
    assert "process mesh.peers.{observer}.changes" in names  # the decision service's analysis
    assert {"request mesh.decision.{node}.vote", "process mesh.decision.{node}.vote"} <= names
    assert "process mesh.consensus.{node}.cas" in names  # the commit
    assert "publish mesh.decision.{node}.events" in names
    assert [s.name for s in lab_spans if s.name.startswith("process mesh.lab")] == [
        "process mesh.lab.node.services-restart"
    ]  # the action, in the lab's control (this process)
    assert {"meshmind-discovery", "meshmind-decision", "meshmind-consensus"} <= services
