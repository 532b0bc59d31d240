"""A 3-server NATS cluster with JetStream on loopback, and an R3 file stream on it (a baseline)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import StorageType

from meshmind.lab import ManagedProcess, free_ports, nats_server_binary

CLUSTER_NAME = "bench-r3"
READY_WITHIN_S = 60.0


@dataclass
class ClusterServer:
    """One server of the cluster: its name, client URL and process."""

    name: str
    url: str
    process: ManagedProcess


def server_config(
    name: str, client_port: int, route_port: int, route_ports: list[int], store_dir: Path
) -> str:
    """The config of one cluster server: JetStream fsyncing every write, routes to the others."""
    routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in route_ports if p != route_port)
    return f"""server_name: {name}
listen: "127.0.0.1:{client_port}"
jetstream {{
  store_dir: "{store_dir}"
  sync_interval: always
}}
cluster {{
  name: {CLUSTER_NAME}
  listen: "127.0.0.1:{route_port}"
  routes: [{routes}]
}}
"""


def cluster_servers(run_dir: Path, size: int) -> list[ClusterServer]:
    """Write the configs of ``size`` clustered servers under ``run_dir``; their processes."""
    ports = free_ports(2 * size)
    client_ports, route_ports = ports[:size], ports[size:]
    run_dir.mkdir(parents=True, exist_ok=True)
    servers = []
    for index in range(size):
        name = f"js{index + 1}"
        config = run_dir / f"{name}.conf"
        store = run_dir / "store" / name
        config.write_text(
            server_config(name, client_ports[index], route_ports[index], route_ports, store)
        )
        process = ManagedProcess(
            name, [nats_server_binary(), "-c", str(config)], log_path=run_dir / f"{name}.log"
        )
        servers.append(ClusterServer(name, f"nats://127.0.0.1:{client_ports[index]}", process))
    return servers


@contextlib.asynccontextmanager
async def jetstream_cluster(run_dir: Path, size: int = 3) -> AsyncIterator[list[ClusterServer]]:
    """``size`` clustered JetStream servers, started; stopped on exit."""
    servers = cluster_servers(run_dir, size)
    try:
        for server in servers:
            await server.process.start()
        yield servers
    finally:
        for server in servers:
            await server.process.stop()


async def _ignore(_: Exception) -> None:
    """Connection errors while servers start or die are expected here; nats-py would print them."""


async def connect(url: str, *, reconnect: bool = True) -> Client:
    """A nats-py client on ``url``, retrying while the server starts."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_WITHIN_S
    while True:
        try:
            return await nats.connect(
                url,
                allow_reconnect=reconnect,
                reconnect_time_wait=0.02,
                connect_timeout=1,
                max_reconnect_attempts=-1 if reconnect else 0,
                error_cb=_ignore,
            )
        except (OSError, nats.errors.Error):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def add_r3_stream(client: Client, stream: str, subject: str) -> str:
    """Create a 3-replica file stream once the cluster's JetStream answers; its leader's name."""
    js = client.jetstream()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_WITHIN_S
    while True:
        try:
            await js.add_stream(
                name=stream, subjects=[subject], num_replicas=3, storage=StorageType.FILE
            )
            break
        except (nats.errors.Error, nats.js.errors.Error):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)
    return await stream_leader(client, stream)


async def stream_leader(client: Client, stream: str) -> str:
    """The name of the server leading ``stream``, once it has one."""
    js = client.jetstream()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_WITHIN_S
    while True:
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
            info = await js.stream_info(stream)
            if info.cluster is not None and info.cluster.leader:
                return info.cluster.leader
        if loop.time() > deadline:
            raise TimeoutError(f"stream {stream} has no leader")
        await asyncio.sleep(0.1)
