"""The lab process: runs a local mesh and its control service until told to stop."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from meshmind import __version__
from meshmind.bus import BusSettings, serve
from meshmind.bus.protocol import LAB_SERVICE
from meshmind.lab._control import lab_control
from meshmind.lab._mesh import SERVICE_STOP_S, LocalMesh, ServiceCommand, node_names
from meshmind.lab._services import host_services
from meshmind.lab._state import LabState, clear_state, write_state

_SERVICE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
"""A service's name; its log is ``<host>/<name>.log`` in the run directory."""


async def run_lab(
    run_dir: Path,
    nodes: Sequence[str],
    services: Sequence[ServiceCommand],
    *,
    service_stop_s: float = SERVICE_STOP_S,
) -> None:
    """Start the mesh, record it, serve the control service until SIGTERM/SIGINT/shutdown."""
    stop = asyncio.Event()
    mesh = LocalMesh(run_dir, nodes, services=services, service_stop_s=service_stop_s)
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
    parser.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="run COMMAND on every host instead of meshmind's services (repeatable)",
    )
    parser.add_argument(
        "--service-stop",
        type=float,
        default=SERVICE_STOP_S,
        metavar="SECONDS",
        help="how long a service may drain after SIGTERM before it is killed",
    )
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    if args.service_stop < 0:
        parser.error("--service-stop must not be negative")
    nodes = node_names(args.nodes)
    services = [] if args.no_services else host_services(nodes, args.run_dir)
    if args.service:
        try:
            services = [service_command(spec) for spec in args.service]
        except ValueError as error:
            parser.error(str(error))
    run = run_lab(args.run_dir, nodes, services, service_stop_s=args.service_stop)
    asyncio.run(run)


def service_command(spec: str) -> ServiceCommand:
    """``NAME=COMMAND`` (the command split as a shell would) as a service every host runs."""
    name, _, command = spec.partition("=")
    argv = shlex.split(command)
    if not _SERVICE_NAME.fullmatch(name) or not argv:
        raise ValueError(f"--service wants NAME=COMMAND (NAME: letters, digits, _ . -): {spec!r}")
    return ServiceCommand(name, argv)
