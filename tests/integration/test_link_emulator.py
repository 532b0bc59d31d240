"""The link emulator on a real mesh: loud and silent cuts, restore and added latency, seen by
NATS traffic and by the hub's own view of its leaves."""

from __future__ import annotations

import asyncio
import os
import statistics
import time

from meshmind.bus import Bus, BusError, ServiceKit
from meshmind.bus.protocol import LinkShape
from meshmind.lab import LocalMesh
from meshmind.lab._servers import http_json
from tests.conftest import Connect
from tests.kit.echo import ECHO, ECHO_SERVICE, EchoReply, EchoRequest, setup_echo
from tests.kit.waiting import eventually, request_when_served


async def echo_on(bus: Bus) -> None:
    kit = ServiceKit(bus, ECHO_SERVICE, "1.0.0")
    await setup_echo(bus, kit)
    await kit.start()


async def reaches(bus: Bus, node: str) -> bool:
    try:
        await bus.request(ECHO, EchoRequest(text="?"), node=node, timeout=0.5)
    except BusError:
        return False
    return True


async def test_cut_isolates_a_host_whose_local_traffic_still_flows(
    mesh: LocalMesh, connect: Connect
) -> None:
    n1, n2, n2_local = await connect("n1"), await connect("n2"), await connect("n2")
    await echo_on(n2)
    await request_when_served(n1, ECHO, EchoRequest(text="before"), node="n2")
    leaf_pid = mesh.host("n2").server.pid

    await mesh.host("n2").link.cut()

    await eventually(lambda: _not_joined(mesh, "n2"))
    await asyncio.sleep(2.5)  # the leaf retries every second: it must find no way around the cut
    assert await _not_joined(mesh, "n2")
    assert not await reaches(n1, "n2")
    local = await n2_local.request(ECHO, EchoRequest(text="local"), node="n2", timeout=2)
    assert local == EchoReply(text="local", node="n2")

    mesh.host("n2").link.restore()

    await eventually(lambda: reaches(n1, "n2"), within=10)
    assert mesh.host("n2").server.pid == leaf_pid, "restore must not restart the leaf"
    assert mesh.host("n2").link.connections == 1, "the leaf must come back through its link"
    assert n1.is_connected
    assert n2.is_connected


async def _not_joined(mesh: LocalMesh, node: str) -> bool:
    return node not in await mesh.joined()


async def leaf_port(mesh: LocalMesh, node: str) -> int | None:
    """The hub side's view of ``node``'s leaf connection: the port it comes from, if any."""
    leafz = await http_json(f"{mesh.hub_monitor_url}/leafz")
    ports = [leaf["port"] for leaf in leafz.get("leafs") or [] if leaf.get("name") == node]
    return ports[0] if ports else None


PING_INTERVAL_S, PING_MAX = 2.0, 3
"""The lab's servers (``_nats_config``): a ping every 2 s, a connection is stale when a fourth
ping would be outstanding. After a silent cut the first unanswered ping goes out within one
interval (two, if the other side's traffic let the hub skip one), and the connection is closed
three intervals later: 6 to 10 s after the cut, never sooner than about 6 s."""


async def test_a_silent_cut_goes_unnoticed_until_the_servers_pings_time_out(
    mesh: LocalMesh, connect: Connect
) -> None:
    n1, n2 = await connect("n1"), await connect("n2")
    await echo_on(n2)
    await request_when_served(n1, ECHO, EchoRequest(text="before"), node="n2")
    leaf_pid = mesh.host("n2").server.pid

    await mesh.host("n2").link.cut("silent")
    cut_at = time.monotonic()

    assert not await reaches(n1, "n2"), "nothing may cross a silent cut"
    assert mesh.host("n2").link.connections >= 1, "the leaf's connection stays open"
    while time.monotonic() - cut_at < (PING_MAX - 1) * PING_INTERVAL_S:
        assert "n2" in await mesh.joined(), (
            f"the hub noticed a silent cut after {time.monotonic() - cut_at:.1f}s: "
            "only its pings can tell it"
        )
        await asyncio.sleep(0.2)
    await eventually(lambda: _not_joined(mesh, "n2"), within=(PING_MAX + 4) * PING_INTERVAL_S)
    noticed = time.monotonic() - cut_at
    assert noticed >= (PING_MAX - 1) * PING_INTERVAL_S

    mesh.host("n2").link.restore()

    await eventually(lambda: reaches(n1, "n2"), within=15)
    assert "n2" in await mesh.joined()
    assert mesh.host("n2").server.pid == leaf_pid, "restore must not restart the leaf"
    assert mesh.host("n2").link.connections == 1, "the leaf must come back through its link"
    local = await n2.request(ECHO, EchoRequest(text="after"), node="n2", timeout=2)
    assert local == EchoReply(text="after", node="n2")


async def test_restore_resets_a_leaf_connection_that_lost_bytes_and_it_rejoins_cleanly(
    mesh: LocalMesh, connect: Connect
) -> None:
    n1, n2 = await connect("n1"), await connect("n2")
    await echo_on(n2)
    await request_when_served(n1, ECHO, EchoRequest(text="before"), node="n2")
    before = await leaf_port(mesh, "n2")

    await mesh.host("n2").link.cut("silent")
    assert not await reaches(n1, "n2")  # a request and its reply lost mid-stream
    mesh.host("n2").link.restore()  # well before any ping times out

    await eventually(lambda: reaches(n1, "n2"), within=10)
    after = await leaf_port(mesh, "n2")
    assert after is not None
    assert after != before, "the connection that lost bytes must be replaced, not resumed"
    for text in ("one", "two", "three"):
        reply = await n1.request(ECHO, EchoRequest(text=text), node="n2", timeout=2)
        assert reply == EchoReply(text=text, node="n2")


async def round_trips_ms(bus: Bus, node: str, count: int = 9) -> float:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await bus.request(ECHO, EchoRequest(text="rtt"), node=node, timeout=5)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def test_50ms_delay_raises_the_round_trip_across_the_link_by_100ms(
    mesh: LocalMesh, connect: Connect
) -> None:
    n1, n2 = await connect("n1"), await connect("n2")
    await echo_on(n2)
    await request_when_served(n1, ECHO, EchoRequest(text="warm-up"), node="n2")
    clean = await round_trips_ms(n1, "n2")

    mesh.host("n2").link.set_shape(LinkShape(delay_ms=50))
    delayed = await round_trips_ms(n1, "n2")

    assert delayed - clean >= 100, f"clean {clean:.1f} ms, delayed {delayed:.1f} ms"
    assert delayed - clean < 400, f"clean {clean:.1f} ms, delayed {delayed:.1f} ms"


async def test_bandwidth_cap_slows_a_large_transfer(mesh: LocalMesh, connect: Connect) -> None:
    n1, n2 = await connect("n1"), await connect("n2")
    store = await n1.hub().object_store("test-rate")
    blob = os.urandom(250_000)  # 2 Mbit, random: leaf links compress (S2) what they can

    mesh.host("n2").link.set_shape(LinkShape(rate_bps=4_000_000))
    reader = await n2.hub().object_store("test-rate")
    await store.put("blob", blob)
    start = time.perf_counter()
    assert await reader.get("blob") == blob
    elapsed = time.perf_counter() - start

    assert elapsed >= 0.45, f"2 Mbit through a 4 Mbit/s link took only {elapsed:.2f}s"
