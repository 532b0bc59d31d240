"""A lab whose hosts run every service, decision included, with the lab's control served
in this process (the decision services heal through it), and helpers to follow decisions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from opentelemetry import trace

from meshmind import __version__
from meshmind.bus import Bus, BusError, BusSettings, Empty, ServiceKit
from meshmind.bus.protocol import (
    CONSENSUS_STATUS,
    DECISION_EVENTS,
    DECISION_HISTORY,
    DECISION_SERVICE,
    DISCOVERY_PEERS,
    LAB_SERVICE,
    DecisionEvent,
    DecisionHistoryQuery,
    PeerQuery,
)
from meshmind.lab import LocalMesh, host_services
from meshmind.lab._control import lab_control
from meshmind.lab._services import FL_SERVICES
from tests.kit.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
SERVICE_SOURCES = [ROOT / "services" / name for name in ("consensus", "decision")]
"""Service trees the lab's processes import even before the project is reinstalled."""

FAST = {
    "LOG_LEVEL": "info",
    "DECISION_SETTLE_S": "3",
    "DECISION_OUTCOME_S": "30",
}


def decision_env(**extra: str) -> dict[str, str]:
    """The environment of the lab's services."""
    paths = [str(p) for p in SERVICE_SOURCES]
    path = os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**FAST, "PYTHONPATH": path, **extra}


@dataclass
class DecisionLab:
    """The mesh, a bus on its hub, and every decision event seen so far."""

    mesh: LocalMesh
    hub: Bus
    events: list[DecisionEvent] = field(default_factory=list)
    traces: list[int] = field(default_factory=list)
    """The trace id each event arrived in, in the same order."""

    def committed(self, prefix: str = "") -> list[DecisionEvent]:
        """Committed decisions whose anomaly key starts with ``prefix``."""
        return [e for e in self.events if e.kind == "committed" and e.record.key.startswith(prefix)]

    def of_kind(self, kind: str, prefix: str = "") -> list[DecisionEvent]:
        """Events of ``kind`` about anomalies whose key starts with ``prefix``."""
        return [e for e in self.events if e.kind == kind and e.record.key.startswith(prefix)]

    async def decision_services(self) -> set[str]:
        """The hosts whose decision service answers ``$SRV.PING``."""
        pings = await self.hub.gather_raw(f"$SRV.PING.{DECISION_SERVICE}", wait=0.5)
        return {json.loads(p.data).get("metadata", {}).get("node", "") for p in pings}

    async def ready(self, within: float = 300.0, *, consensus: bool = True) -> None:
        """Wait until every host's discovery lists every host, every decision service answers
        and the consensus group has a leader."""
        nodes = self.mesh.nodes

        async def all_ready() -> bool:
            try:
                for node in nodes:
                    peers = await self.hub.request(DISCOVERY_PEERS, PeerQuery(), node=node)
                    if {p.node for p in peers.peers} != set(nodes):
                        return False
                    if not consensus:
                        continue
                    await self.hub.request(DECISION_HISTORY, DecisionHistoryQuery(), node=node)
                    status = await self.hub.request(CONSENSUS_STATUS, Empty(), node=node)
                    if status.leader is None:
                        return False
            except BusError:
                return False
            return await self.decision_services() >= set(nodes)

        await eventually(all_ready, within=within, every=0.5)


@contextlib.asynccontextmanager
async def decision_lab(
    run_dir: Path,
    nodes: Sequence[str],
    *,
    actuators: str = "lab",
    without: Sequence[str] = FL_SERVICES,
    **env: str,
) -> AsyncIterator[DecisionLab]:
    """A started lab running every host service but those named in ``without`` (by default
    the federated-learning ones, which these tests do not use) and the lab's control, ready
    to decide; the decision services' actuators are ``actuators``."""
    services = [
        replace(s, env={**s.env, "DECISION_ACTUATORS": actuators})
        if s.name == "meshmind_decision"
        else s
        for s in host_services(nodes, run_dir)
        if s.name not in without
    ]
    mesh = LocalMesh(run_dir, nodes, services=services, service_env=decision_env(**env))
    try:
        await mesh.start(timeout=60)
        hub = await Bus.connect(BusSettings(node_id="observer", nats_url=mesh.hub_url), name="t")
        control_bus = await Bus.connect(
            BusSettings(node_id="lab", nats_url=mesh.hub_url), name="lab"
        )
        kit = ServiceKit(control_bus, LAB_SERVICE, __version__)
        await lab_control(mesh, asyncio.Event())(control_bus, kit)
        await kit.start()
        lab = DecisionLab(mesh, hub)

        async def seen(event: DecisionEvent) -> None:
            lab.events.append(event)
            lab.traces.append(trace.get_current_span().get_span_context().trace_id)

        await hub.subscribe(DECISION_EVENTS, seen)
        try:
            await lab.ready(consensus="meshmind_consensus" not in without)
            yield lab
        finally:
            await kit.stop()
            await control_bus.close()
            await hub.close()
    finally:
        await mesh.stop()
