"""The lab: a whole mesh on one machine, with links that can be degraded and cut."""

from meshmind.lab._daemon import run_lab
from meshmind.lab._emulator import LinkEmulator, delivery_time
from meshmind.lab._mesh import Host, LocalMesh, ServiceCommand, node_names
from meshmind.lab._nats_config import HUB_DOMAIN, ServerPorts, hub_config, leaf_config
from meshmind.lab._ports import free_ports
from meshmind.lab._process import ManagedProcess
from meshmind.lab._servers import (
    DockerRunner,
    LocalRunner,
    ServerRunner,
    docker_engine_answers,
    nats_server_binary,
    pick_runner,
)
from meshmind.lab._services import HOST_SERVICES, host_services
from meshmind.lab._state import (
    LabState,
    default_run_dir,
    is_lab_process,
    pid_alive,
    read_state,
    reap_orphans,
)

__all__ = [
    "HOST_SERVICES",
    "HUB_DOMAIN",
    "DockerRunner",
    "Host",
    "LabState",
    "LinkEmulator",
    "LocalMesh",
    "LocalRunner",
    "ManagedProcess",
    "ServerPorts",
    "ServerRunner",
    "ServiceCommand",
    "default_run_dir",
    "delivery_time",
    "docker_engine_answers",
    "free_ports",
    "host_services",
    "hub_config",
    "is_lab_process",
    "leaf_config",
    "nats_server_binary",
    "node_names",
    "pick_runner",
    "pid_alive",
    "read_state",
    "reap_orphans",
    "run_lab",
]
