"""The services every lab host runs, as commands of this Python environment."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from meshmind.lab._mesh import ServiceCommand

HOST_SERVICES: tuple[str, ...] = (
    "meshmind_discovery",
    "meshmind_health_monitor",
    "meshmind_consensus",
    "meshmind_decision",
    "meshmind_fl_trainer",
    "meshmind_fl_coordinator",
)
"""Module names of the services a mesh host runs, started as ``python -m <module>``."""

CONSENSUS = "meshmind_consensus"
DECISION = "meshmind_decision"
DISCOVERY = "meshmind_discovery"
FL_SERVICES = ("meshmind_fl_trainer", "meshmind_fl_coordinator")
LAB_CAPABILITIES = "train"
"""What every lab host offers: each trains federated jobs on its share of the data."""


def host_services(
    nodes: Sequence[str] = (), run_dir: Path | None = None, *, consensus_backend: str = "raft"
) -> list[ServiceCommand]:
    """The commands that start each host's services with this interpreter.

    The consensus service needs the initial cluster and a data directory: with ``nodes`` and
    ``run_dir`` it runs with ``CONSENSUS_PEERS`` set to every node and its log under
    ``<run_dir>/consensus/<node>``; without them it is left out, and so are the services that
    act through it (decision, federated learning): the rest runs discovery and health-monitor.
    The federated-learning services need them too: their coordinator takes its job
    leases from consensus, and each trainer's share of a packaged data set is its place among
    ``nodes`` (``FL_NODES``; ``n3`` trains on share 2)."""
    commands = []
    for module in HOST_SERVICES:
        env: dict[str, str] = {}
        if module == CONSENSUS:
            if not nodes or run_dir is None:
                continue
            env = {
                "CONSENSUS_PEERS": ",".join(nodes),
                "DATA_DIR": str(run_dir.resolve() / "consensus"),
                "CONSENSUS_BACKEND": consensus_backend,
            }
        if module in (*FL_SERVICES, DECISION) and (not nodes or run_dir is None):
            continue  # they act through consensus, which needs the nodes and a data directory
        if module in FL_SERVICES:
            env = {"FL_NODES": str(len(nodes))}
        if module == DISCOVERY:
            env = {"CAPABILITIES": LAB_CAPABILITIES}
        if module == DECISION:
            env = {"DECISION_ACTUATORS": "lab"}  # heal through the lab's control service
        commands.append(ServiceCommand(module, [sys.executable, "-m", module], env))
    return commands
