"""The link emulator over plain TCP: shaping, backpressure, and cuts that never hang."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from meshmind.bus.protocol import LinkShape
from meshmind.lab import LinkEmulator


@pytest.fixture
async def sink() -> AsyncIterator[tuple[asyncio.Server, list[int]]]:
    """A TCP server that reads and counts everything it is sent."""
    received = [0]

    async def drain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                received[0] += len(data)
        writer.close()

    server = await asyncio.start_server(drain, "127.0.0.1", 0)
    yield server, received
    server.close()


async def test_a_bulk_upload_is_held_to_the_rate_and_cut_without_hanging(
    sink: tuple[asyncio.Server, list[int]],
) -> None:
    server, received = sink
    link = LinkEmulator("t", ("127.0.0.1", server.sockets[0].getsockname()[1]))
    await link.start()
    link.set_shape(LinkShape(rate_bps=1_000_000))
    _, writer = await asyncio.open_connection("127.0.0.1", link.port)

    async def upload() -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(200):
                writer.write(b"\0" * 65536)  # 13 MB: far more than 1 Mbit/s carries here
                await writer.drain()

    uploading = asyncio.create_task(upload())
    start = time.monotonic()
    await asyncio.sleep(2.0)
    carried = link.bytes_up

    assert carried <= 1.5 * 2.0 * 1_000_000 / 8, f"{carried} bytes in 2 s through 1 Mbit/s"
    assert carried >= 0.5 * 2.0 * 1_000_000 / 8

    await asyncio.wait_for(link.cut(), 2)
    assert link.connections == 0
    await asyncio.wait_for(uploading, 5)
    await asyncio.wait_for(link.stop(), 2)
    assert time.monotonic() - start < 10
    assert received[0] <= carried + 65536


async def test_no_connection_gets_through_while_cut(
    sink: tuple[asyncio.Server, list[int]],
) -> None:
    server, _ = sink
    link = LinkEmulator("t", ("127.0.0.1", server.sockets[0].getsockname()[1]))
    await link.start()
    await link.cut()
    reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(1), 2) == b""
    writer.close()
    assert link.connections == 0
    link.restore()
    _, writer = await asyncio.open_connection("127.0.0.1", link.port)
    writer.write(b"hello")
    await writer.drain()
    await asyncio.sleep(0.2)
    assert link.connections == 1
    assert link.bytes_up == 5
    await link.stop()


Pair = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def far_end() -> AsyncIterator[tuple[int, asyncio.Queue[Pair]]]:
    """A TCP server that hands every accepted connection to the test."""
    accepted: asyncio.Queue[Pair] = asyncio.Queue()

    async def hand_over(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(hand_over, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], accepted
    server.close()


async def through(link: LinkEmulator, accepted: asyncio.Queue[Pair]) -> tuple[Pair, Pair]:
    """A connection through the link: the near (host) end and the far (hub) end."""
    near = await asyncio.open_connection("127.0.0.1", link.port)
    far = await asyncio.wait_for(accepted.get(), 2)
    return near, far


async def send(pair: Pair, data: bytes) -> None:
    pair[1].write(data)
    await pair[1].drain()


async def arrives(pair: Pair, size: int) -> bytes:
    return await asyncio.wait_for(pair[0].readexactly(size), 2)


async def nothing_arrives(pair: Pair, within: float = 0.5) -> bool:
    """True when the stream stays open and silent: no data, no close, no reset."""
    try:
        await asyncio.wait_for(pair[0].read(1), within)
    except TimeoutError:
        return True
    return False


async def is_reset(pair: Pair) -> bool:
    """True when the stream ends (reset or closed) rather than carrying data."""
    try:
        return await asyncio.wait_for(pair[0].read(1), 2) == b""
    except ConnectionError:
        return True


async def test_a_silent_cut_keeps_connections_open_and_carries_nothing_either_way(
    far_end: tuple[int, asyncio.Queue[Pair]],
) -> None:
    port, accepted = far_end
    link = LinkEmulator("t", ("127.0.0.1", port))
    await link.start()
    near, far = await through(link, accepted)
    await send(near, b"hello")
    assert await arrives(far, 5) == b"hello"

    await link.cut("silent")
    await send(near, b"x" * 100_000)
    await send(far, b"y" * 100_000)
    assert await nothing_arrives(far)
    assert await nothing_arrives(near)
    assert (link.bytes_up, link.bytes_down) == (5, 0)
    assert link.connections == 1, "a silent cut must not close the connection"

    late = await asyncio.open_connection("127.0.0.1", link.port)  # the proxy accepts it...
    await send(late, b"CONNECT {}\r\n")
    assert await nothing_arrives(late)
    assert accepted.empty(), "...but nothing may reach the far side"
    assert link.connections == 2

    link.restore()
    assert await is_reset(near), "a connection that lost bytes must be reset on restore"
    assert await is_reset(far)
    assert await is_reset(late)
    await asyncio.sleep(0.1)
    assert link.connections == 0

    fresh, fresh_far = await through(link, accepted)
    await send(fresh, b"again")
    assert await arrives(fresh_far, 5) == b"again"
    await link.stop()


@pytest.mark.parametrize("way", ["up", "down"])
async def test_a_one_way_cut_carries_the_other_way_only(
    far_end: tuple[int, asyncio.Queue[Pair]], way: str
) -> None:
    port, accepted = far_end
    link = LinkEmulator("t", ("127.0.0.1", port))
    await link.start()
    used, used_far = await through(link, accepted)
    idle, idle_far = await through(link, accepted)

    await link.cut("up" if way == "up" else "down")
    await send(used, b"to the hub")
    await send(used_far, b"to the host")
    if way == "up":
        assert await arrives(used, 11) == b"to the host"
        assert await nothing_arrives(used_far)
    else:
        assert await arrives(used_far, 10) == b"to the hub"
        assert await nothing_arrives(used)

    link.restore()
    assert await is_reset(used), "the connection that lost bytes must be reset"
    assert await is_reset(used_far)
    await send(idle, b"ping")
    await send(idle_far, b"pong")
    assert await arrives(idle_far, 4) == b"ping", "a connection that lost nothing carries on"
    assert await arrives(idle, 4) == b"pong"
    assert link.connections == 1
    await link.stop()
