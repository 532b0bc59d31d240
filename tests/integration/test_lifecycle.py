"""A service drains on SIGTERM and then ends at once; a connection rides out its leaf server's
restart."""

from __future__ import annotations

import asyncio
import signal

import pytest

from meshmind.bus import Bus, ServiceKit
from meshmind.lab import LocalMesh
from tests.conftest import Connect
from tests.integration.test_tracing import start_echo_process
from tests.kit.echo import (
    ECHO,
    ECHO_SERVICE,
    LINGERING_THREAD,
    PINGS,
    EchoReply,
    EchoRequest,
    Ping,
    setup_echo,
)
from tests.kit.waiting import eventually, request_when_served


async def test_sigterm_lets_the_request_in_flight_finish(mesh: LocalMesh, connect: Connect) -> None:
    server = start_echo_process(mesh, "n1")
    try:
        client = await connect("n2")
        await request_when_served(client, ECHO, EchoRequest(text="up?"), node="n1", within=20)

        slow = asyncio.create_task(
            client.request(ECHO, EchoRequest(text="slow", sleep_s=1.0), node="n1", timeout=10)
        )
        await asyncio.sleep(0.3)
        server.send_signal(signal.SIGTERM)

        assert await slow == EchoReply(text="slow", node="n1")
    finally:
        returncode = await asyncio.to_thread(server.wait, 20)
    assert returncode == 0


async def test_a_drained_service_ends_without_waiting_for_its_threads(
    mesh: LocalMesh, connect: Connect
) -> None:
    server = start_echo_process(mesh, "n1", **{LINGERING_THREAD: "1"})
    try:
        client = await connect("n2")
        await request_when_served(client, ECHO, EchoRequest(text="up?"), node="n1", within=20)
        server.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(server.communicate, timeout=20)
    finally:
        server.kill()
    assert server.returncode == 0
    assert b'"service.stopped"' in stderr


async def test_bus_reconnects_after_its_leaf_server_restarts(
    mesh: LocalMesh, connect: Connect
) -> None:
    n1, n3 = await connect("n1"), await connect("n3")
    kit = ServiceKit(n1, ECHO_SERVICE, "1.0.0")
    await setup_echo(n1, kit)
    await kit.start()
    heard: list[Ping] = []

    async def on_ping(ping: Ping) -> None:
        heard.append(ping)

    await n1.subscribe(PINGS, on_ping, node="n3")
    await request_when_served(n3, ECHO, EchoRequest(text="before"), node="n1")

    await mesh.kill("n1")
    await eventually(lambda: not n1.is_connected)
    await mesh.restart("n1")
    await eventually(lambda: n1.is_connected, within=10)

    reply = await request_when_served(n3, ECHO, EchoRequest(text="after"), node="n1", within=10)
    assert reply == EchoReply(text="after", node="n1")

    async def ping_heard() -> bool:
        await n3.publish(PINGS, Ping(seq=1, origin="n3"), node="n3")
        return bool(heard)

    await eventually(ping_heard, within=10)


async def test_request_fails_fast_with_a_clear_error_when_nats_is_absent() -> None:
    from meshmind.bus import BusError, BusSettings
    from meshmind.lab import free_ports

    [port] = free_ports(1)
    settings = BusSettings(node_id="n1", nats_url=f"nats://127.0.0.1:{port}")
    with pytest.raises(BusError, match=f"cannot reach NATS at nats://127.0.0.1:{port}"):
        await Bus.connect(settings, name="test", connect_timeout_s=0.5)


async def test_one_endpoint_serves_many_requests_at_once(mesh: LocalMesh, connect: Connect) -> None:
    n1, n2 = await connect("n1"), await connect("n2")
    kit = ServiceKit(n1, ECHO_SERVICE, "1.0.0")
    await setup_echo(n1, kit)
    await kit.start()
    await request_when_served(n2, ECHO, EchoRequest(text="up?"), node="n1")

    slow = [EchoRequest(text=str(i), sleep_s=1.0) for i in range(20)]
    replies = await asyncio.gather(
        *(n2.request(ECHO, request, node="n1", timeout=5) for request in slow)
    )  # one at a time, twenty one-second requests could not all be answered within five

    assert sorted(int(r.text) for r in replies) == list(range(20))
    await kit.stop()
