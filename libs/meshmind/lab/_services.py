"""The services every lab host runs, as commands of this Python environment."""

from __future__ import annotations

from meshmind.lab._mesh import ServiceCommand

HOST_SERVICES: tuple[str, ...] = ("meshmind_discovery", "meshmind_health_monitor")
"""Module names of the services a mesh host runs, started as ``python -m <module>``."""


def host_services() -> list[ServiceCommand]:
    """The commands that start each host's services with this interpreter."""
    import sys

    return [ServiceCommand(module, [sys.executable, "-m", module]) for module in HOST_SERVICES]
