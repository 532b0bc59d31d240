"""A lab whose hosts run the consensus service, and a client that asks it from any host."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from meshmind.bus import Bus, BusSettings, Empty, EndpointSpec, Message
from meshmind.bus.protocol import CONSENSUS_STATUS
from meshmind.lab import LocalMesh, host_services
from tests.kit.waiting import eventually, request_when_served

R = TypeVar("R", bound=Message)

SERVICE_SOURCE = Path(__file__).resolve().parents[2] / "services" / "consensus"
"""The service's source tree, importable by the lab's processes even before a reinstall."""


def consensus_env(backend: str, **extra: str) -> dict[str, str]:
    """The environment of the lab's consensus services."""
    path = os.pathsep.join(p for p in (str(SERVICE_SOURCE), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "CONSENSUS_BACKEND": backend, "LOG_LEVEL": "info", **extra}


@contextlib.asynccontextmanager
async def consensus_lab(
    run_dir: Path, nodes: Sequence[str], backend: str, **env: str
) -> AsyncIterator[LocalMesh]:
    """A started mesh whose hosts run only the consensus service, with ``backend``."""
    services = [
        s
        for s in host_services(nodes, run_dir, consensus_backend=backend)
        if s.name == "meshmind_consensus"
    ]
    mesh = LocalMesh(run_dir, nodes, services=services, service_env=consensus_env(backend, **env))
    try:
        await mesh.start(timeout=60)
        yield mesh
    finally:
        await mesh.stop()


async def connect(mesh: LocalMesh, node: str, name: str = "client") -> Bus:
    """A bus on ``node``'s leaf."""
    settings = BusSettings(node_id=node, nats_url=mesh.host(node).url)
    return await Bus.connect(settings, name=name)


async def ask(
    bus: Bus, spec: EndpointSpec[Any, R], request: Message, *, timeout: float = 10.0
) -> R:
    """``spec`` on the bus's own host, waiting for the service to be served."""
    return await request_when_served(
        bus, spec, request, within=30.0, timeout=timeout, node=bus.node_id
    )


async def wait_for_leader(bus: Bus, *, within: float = 30.0) -> str:
    """The leader the bus's host knows, once it knows one."""
    leader: list[str] = []

    async def known() -> bool:
        status = await ask(bus, CONSENSUS_STATUS, Empty())
        if status.leader:
            leader[:] = [status.leader]
        return bool(status.leader)

    await eventually(known, within=within, every=0.2)
    return leader[0]
