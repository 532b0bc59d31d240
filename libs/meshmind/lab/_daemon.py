"""The lab process: runs a local mesh and its control service until told to stop."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from meshmind import __version__
from meshmind.bus import BusSettings, serve
from meshmind.bus.protocol import LAB_SERVICE
from meshmind.lab._control import lab_control
from meshmind.lab._mesh import LocalMesh, ServiceCommand, node_names
from meshmind.lab._services import host_services
from meshmind.lab._state import LabState, clear_state, write_state


async def run_lab(run_dir: Path, nodes: Sequence[str], services: Sequence[ServiceCommand]) -> None:
    """Start the mesh, record it, serve the control service until SIGTERM/SIGINT/shutdown."""
    stop = asyncio.Event()
    mesh = LocalMesh(run_dir, nodes, services=services)
    async with mesh:
        write_state(
            run_dir,
            LabState(
                pid=os.getpid(), hub_url=mesh.hub_url, nodes=list(nodes), run_dir=str(mesh.run_dir)
            ),
        )
        try:
            settings = BusSettings(node_id="lab", nats_url=mesh.hub_url)
            await serve(
                LAB_SERVICE,
                __version__,
                lab_control(mesh, stop),
                settings=settings,
                stop=stop,
                description="The local mesh's hosts and links.",
            )
        finally:
            clear_state(run_dir)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m meshmind.lab --nodes 5 --run-dir DIR``."""
    parser = argparse.ArgumentParser(prog="python -m meshmind.lab", description=__doc__)
    parser.add_argument("--nodes", type=int, default=3, help="how many hosts (n1 … nN)")
    parser.add_argument("--run-dir", type=Path, required=True, help="configs, data and logs")
    parser.add_argument("--no-services", action="store_true", help="leaves only, no services")
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    services = [] if args.no_services else host_services()
    asyncio.run(run_lab(args.run_dir, node_names(args.nodes), services))
