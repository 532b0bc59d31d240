"""The link emulator: a TCP proxy that adds latency, jitter, a bandwidth cap, stalls and cuts."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from typing import Literal

from meshmind.bus import get_logger
from meshmind.bus.protocol import CutMode, LinkShape

_log = get_logger(__name__)
_CHUNK = 64 * 1024
_QUEUE_CHUNKS = 64
_MAX_BACKLOG_S = 0.25
"""Stop reading while this much queued data waits for a rate-limited wire: the sender then
sees TCP backpressure, as on a real slow link, rather than a deep buffer in the proxy."""


@dataclass
class _Direction:
    """Per-direction schedule: when the wire is free, when the last chunk was delivered."""

    wire_free_at: float = 0.0
    last_delivery_at: float = 0.0
    bytes: int = 0
    queued: int = 0
    """Chunks read and not yet delivered (or dropped)."""


Way = Literal["up", "down"]
"""A direction on a link: ``up`` from the host towards the hub, ``down`` back."""


def delivery_time(
    now: float, size: int, shape: LinkShape, state: _Direction, rng: random.Random
) -> float:
    """When a chunk of ``size`` bytes read at ``now`` reaches the other side.

    The chunk first waits for the wire (serialisation at ``rate_bps``), then travels for
    ``delay_ms`` plus uniform jitter in ``[-jitter_ms, +jitter_ms]`` (never below zero); a
    stall adds ``stall_ms`` with probability ``stall_pct``. TCP delivers in order, so no
    chunk overtakes an earlier one: jitter and stalls hold back what follows them.
    """
    start = max(now, state.wire_free_at)
    on_wire = size * 8 / shape.rate_bps if shape.rate_bps else 0.0
    state.wire_free_at = start + on_wire
    latency_ms = shape.delay_ms
    if shape.jitter_ms:
        latency_ms = max(0.0, latency_ms + rng.uniform(-shape.jitter_ms, shape.jitter_ms))
    if shape.stall_pct and rng.random() * 100 < shape.stall_pct:
        latency_ms += shape.stall_ms
    arrival = max(state.wire_free_at + latency_ms / 1000, state.last_delivery_at)
    state.last_delivery_at = arrival
    return arrival


class _Connection:
    """One proxied TCP connection: two pumps, each a reader feeding a timed writer.

    Without a ``server`` side the connection is a black hole: it was opened while the link was
    silently cut, so the client reached the proxy but nothing reaches the target, and every
    byte the client sends is dropped.
    """

    def __init__(
        self,
        emulator: LinkEmulator,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
    ) -> None:
        self._emulator = emulator
        self.black_hole = server is None
        self.damaged = self.black_hole
        """Whether anything (bytes, a close, a reset) was lost: the stream cannot resume."""
        self._writers = [client[1]]
        self.up = _Direction()
        self.down = _Direction()
        self._tasks = [
            asyncio.create_task(self._pump("up", client[0], server[1] if server else None, self.up))
        ]
        if server is not None:
            self._writers.append(server[1])
            self._tasks.append(
                asyncio.create_task(self._pump("down", server[0], client[1], self.down))
            )

    def _drops(self, way: Way) -> bool:
        return self.black_hole or self._emulator.drops(way)

    async def _pump(
        self,
        way: Way,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter | None,
        state: _Direction,
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE_CHUNKS)
        loop = asyncio.get_running_loop()

        async def deliver() -> None:
            while True:
                at, data = await queue.get()
                try:
                    wait = at - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    if self._drops(way) or writer is None:  # in flight when the link went quiet
                        self.damaged = True
                        if not data:
                            return
                        continue
                    if not data:
                        writer.write_eof() if writer.can_write_eof() else writer.close()
                        return
                    writer.write(data)
                    await writer.drain()
                    state.bytes += len(data)
                finally:
                    state.queued -= 1

        delivering = asyncio.create_task(deliver())
        try:
            while True:
                backlog = state.wire_free_at - loop.time()
                if backlog > _MAX_BACKLOG_S:
                    await asyncio.sleep(backlog - _MAX_BACKLOG_S)
                data = await reader.read(_CHUNK)
                if data and self._drops(way):  # read and discard: the sender sees no pushback
                    self.damaged = True
                    continue
                at = delivery_time(
                    loop.time(), len(data), self._emulator.shape, state, self._emulator.rng
                )
                if data and writer is not None and not state.queued and at <= loop.time():
                    writer.write(data)  # due now, nothing ahead of it: no detour via the queue
                    await writer.drain()
                    state.bytes += len(data)
                    continue
                state.queued += 1
                await queue.put((at, data))
                if not data:
                    break
            await delivering
        except (ConnectionError, OSError):
            if self._drops(way):
                self.damaged = True  # the reset is lost on the quiet link: the far side waits
            else:
                self.abort()
        finally:
            delivering.cancel()

    @property
    def done(self) -> bool:
        return all(task.done() for task in self._tasks)

    def abort(self) -> None:
        """Reset both sides at once, as a partition that TCP notices would, and stop pumping."""
        for writer in self._writers:
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()

    async def wait(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)


class LinkEmulator:
    """Listens on ``listen_port`` and forwards every connection to ``target``, shaped.

    The shape can change while connections are open and applies to every chunk read after
    the change. :meth:`cut` partitions the link in one of four ways (see :data:`CutMode`):
    ``loud`` resets the open connections and refuses new ones, so both sides know at once;
    ``silent`` keeps them open and drops every byte both ways, so each side learns of it only
    from its own timeouts (nats-server: its unanswered pings); ``up`` and ``down``
    drop one direction only. During any cut but a loud one, new connections are accepted and
    black-holed: a TCP handshake needs both directions, so none can reach the target.
    :meth:`restore` ends every kind of cut and clears the shape.
    """

    def __init__(
        self,
        name: str,
        target: tuple[str, int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
    ) -> None:
        self.name = name
        self.target = target
        self._host = host
        self._port = port
        self.shape = LinkShape()
        self.cut_mode: CutMode | None = None
        self.rng = random.Random(seed)
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._carried_up = 0
        self._carried_down = 0

    @property
    def port(self) -> int:
        """The port the emulator listens on."""
        if self._server is None:
            return self._port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def cut_off(self) -> bool:
        """Whether any kind of cut is in force."""
        return self.cut_mode is not None

    def drops(self, way: Way) -> bool:
        """Whether bytes going ``way`` are dropped now."""
        return self.cut_mode in ("loud", "silent") or self.cut_mode == way

    async def start(self) -> None:
        """Start listening."""
        self._server = await asyncio.start_server(self._accept, self._host, self._port)

    async def stop(self) -> None:
        """Stop listening and reset every open connection."""
        if self._server is not None:
            self._server.close()
        await self._abort_all()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def set_shape(self, shape: LinkShape) -> None:
        """Replace the link's shape."""
        self.shape = shape
        _log.info("link.shaped", link=self.name, **shape.model_dump(exclude={"v"}))

    async def cut(self, mode: CutMode = "loud") -> None:
        """Partition the link: ``loud`` resets open connections and refuses new ones;
        ``silent``, ``up`` and ``down`` drop bytes on connections that stay open."""
        self.cut_mode = mode
        if mode == "loud":
            await self._abort_all()
        _log.info("link.cut", link=self.name, mode=mode)

    def restore(self) -> None:
        """End any cut and clear every impairment.

        A connection that lost anything to a silent or one-way cut is reset here, and so is
        every black-holed one. TCP carries one ordered byte stream: resuming delivery after a
        gap would hand the other side the middle of a protocol message (nats-server closes
        the connection with a parser error at best, acts on garbage at worst). A real link's
        TCP would end such a connection too, once its retransmissions time out; resetting it
        at once lets both sides reconnect cleanly. Connections that lost nothing carry on.
        """
        self.cut_mode = None
        self.shape = LinkShape()
        damaged = [c for c in self._connections if c.damaged]
        for connection in damaged:
            connection.abort()
        _log.info("link.restored", link=self.name, reset=len(damaged))

    @property
    def connections(self) -> int:
        """Connections open now (black-holed ones included: the client holds them open)."""
        return sum(1 for c in self._connections if not c.done)

    @property
    def bytes_up(self) -> int:
        """Bytes delivered from the client side to the target so far."""
        return self._carried_up + sum(c.up.bytes for c in self._connections)

    @property
    def bytes_down(self) -> int:
        """Bytes delivered from the target to the client side so far."""
        return self._carried_down + sum(c.down.bytes for c in self._connections)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_mode == "loud":
            writer.transport.abort()
            return
        upstream = None
        if self.cut_mode is None:
            try:
                upstream = await asyncio.open_connection(*self.target)
            except OSError as error:
                _log.warning("link.target_unreachable", link=self.name, error=str(error))
                writer.transport.abort()
                return
            if self.cut_mode == "loud":  # cut while we were connecting
                upstream[1].transport.abort()
                writer.transport.abort()
                return
        connection = _Connection(self, (reader, writer), upstream)
        self._connections.add(connection)
        try:
            await connection.wait()
        finally:
            connection.abort()
            self._connections.discard(connection)
            self._carried_up += connection.up.bytes
            self._carried_down += connection.down.bytes

    async def _abort_all(self) -> None:
        connections = list(self._connections)
        for connection in connections:
            connection.abort()
        for connection in connections:
            with contextlib.suppress(Exception):
                await connection.wait()
