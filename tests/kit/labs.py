"""A local mesh with its services ready to start, and an observer connected to its hub."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from meshmind.bus import Bus, BusSettings
from meshmind.bus.protocol import PEER_CHANGES, PeerChange
from meshmind.lab import LocalMesh, ServiceCommand, host_services
from tests.kit.membership import sees_everyone
from tests.kit.recorder import Recorder
from tests.kit.waiting import eventually


@contextlib.asynccontextmanager
async def observed_lab(
    run_dir: Path,
    nodes: Sequence[str],
    *,
    name: str = "observer",
    service_env: dict[str, str] | None = None,
    services: Sequence[ServiceCommand] | None = None,
) -> AsyncIterator[tuple[LocalMesh, Bus]]:
    """A started mesh whose services (by default discovery and health-monitor) are not
    started yet, and a bus on its hub."""
    chosen = host_services() if services is None else services
    mesh = LocalMesh(run_dir, nodes, services=chosen, service_env=service_env)
    try:
        await mesh.start(timeout=60, services=False)
        hub = await Bus.connect(BusSettings(node_id="observer", nats_url=mesh.hub_url), name=name)
        try:
            yield mesh, hub
        finally:
            await hub.close()
    finally:
        await mesh.stop()


async def converged(lab: LocalMesh, hub: Bus) -> Recorder[PeerChange]:
    """Start every host's services and wait until each host has announced every host joined;
    the recorder of peer changes, started before the services."""
    changes = await Recorder.start(hub, PEER_CHANGES)
    await lab.start_services()
    await eventually(lambda: sees_everyone(changes, lab.nodes), within=60)
    return changes
