"""A lab whose chosen ports are taken before its servers bind them: clear errors, new ports."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshmind.lab import LocalMesh, node_names
from meshmind.lab import _mesh as mesh_module
from meshmind.lab._nats_config import ServerPorts, leaf_config
from meshmind.lab._ports import free_ports
from meshmind.lab._servers import LocalRunner, ServerExited, wait_healthy


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port that something else is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def leaf_start_failure(tmp_path: Path, ports: ServerPorts) -> ServerExited:
    """How a leaf given ``ports`` fails while the lab waits for its monitor port."""
    conf = tmp_path / "leaf.conf"
    conf.write_text(leaf_config("n1", ports, "nats-leaf://127.0.0.1:1", tmp_path))
    server = LocalRunner().server("n1", conf, tmp_path / "leaf.log")
    await server.start()
    try:
        with pytest.raises(ServerExited) as exited:
            await wait_healthy(
                f"http://127.0.0.1:{ports.monitor}",
                timeout=60,
                server=server,
                log_path=tmp_path / "leaf.log",
            )
    finally:
        await server.stop()
    return exited.value


async def test_a_server_that_cannot_bind_its_port_fails_at_once_with_its_log(
    tmp_path: Path, taken_port: int
) -> None:
    (monitor,) = free_ports(1)
    exited = await leaf_start_failure(tmp_path, ServerPorts(taken_port, monitor))
    assert exited.port_taken
    assert str(taken_port) in str(exited)


async def test_a_monitor_port_taken_by_another_servers_client_port_is_a_port_taken(
    tmp_path: Path,
) -> None:
    async def greet(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'INFO {"server_name":"n2"}\r\n')  # what a NATS client port says first
        await writer.drain()
        writer.close()

    other = await asyncio.start_server(greet, "127.0.0.1", 0)
    nats_port = other.sockets[0].getsockname()[1]
    (client,) = free_ports(1)
    try:
        exited = await leaf_start_failure(tmp_path, ServerPorts(client, nats_port))
    finally:
        other.close()
        await other.wait_closed()
    assert exited.port_taken


async def test_a_lab_whose_first_leaf_ports_are_taken_starts_on_new_ones(
    tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen: list[list[int]] = []

    def first_pair_taken(count: int) -> list[int]:
        ports = free_ports(count)
        if count == 2 and all(len(c) != 2 for c in chosen):
            ports[0] = taken_port
        chosen.append(ports)
        return ports

    monkeypatch.setattr(mesh_module, "free_ports", first_pair_taken)
    mesh = LocalMesh(tmp_path / "lab", node_names(1), secure=False)
    try:
        await mesh.start(timeout=30, services=False)
        assert await mesh.joined() == {"n1"}
        assert mesh.host("n1").ports.client != taken_port
    finally:
        await mesh.stop()
    assert len(chosen) == 3, "the hub's ports, the leaf's taken pair, the leaf's new pair"
