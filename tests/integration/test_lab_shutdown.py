"""The lab stops every host at once: services that ignore SIGTERM cost one bound, not one
bound per host."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from meshmind.lab import LocalMesh, ServiceCommand, node_names
from tests.kit.stubborn import READY
from tests.kit.waiting import eventually

STOP_S = 3.0
HOSTS = 4


def stuck_in_drain(mesh: LocalMesh) -> bool:
    logs = [mesh.run_dir / node / "stubborn.log" for node in mesh.nodes]
    return all(log.exists() and READY in log.read_text() for log in logs)


async def test_services_that_ignore_sigterm_on_every_host_cost_one_bound(tmp_path: Path) -> None:
    stubborn = ServiceCommand("stubborn", [sys.executable, "-m", "tests.kit.stubborn"])
    mesh = LocalMesh(
        tmp_path / "lab", node_names(HOSTS), services=[stubborn], service_stop_s=STOP_S
    )
    try:
        await mesh.start()
        await eventually(lambda: stuck_in_drain(mesh), within=30)
    except BaseException:
        await mesh.stop()
        raise
    services = [p for host in mesh.hosts.values() for p in host.services.values()]
    servers = [host.server for host in mesh.hosts.values()]

    started = time.monotonic()
    await mesh.stop()
    took = time.monotonic() - started

    assert [p.returncode for p in services] == [-signal.SIGKILL] * HOSTS, (
        "each service ignored SIGTERM: only the bound may end it"
    )
    assert not any(server.running for server in servers)
    assert mesh.hub is not None
    assert not mesh.hub.running
    assert took >= STOP_S
    assert took < 2 * STOP_S, (
        f"stopping {HOSTS} hosts took {took:.1f}s: one bound is {STOP_S:g}s, "
        f"one after the other would be {HOSTS * STOP_S:g}s"
    )
