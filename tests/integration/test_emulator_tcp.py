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
