"""Writes made at once from one process, coalesced into batch requests to a consensus service."""

from __future__ import annotations

import asyncio
import functools

from meshmind.bus import Bus
from meshmind.bus.protocol import (
    CONSENSUS_BATCH,
    MAX_BATCH_WRITES,
    MAX_PROPOSAL_BYTES,
    KvBatch,
    KvBatchWrite,
    KvWrite,
)

WRITE_OVERHEAD_BYTES = 64
"""What one write adds to a batch request beside its key and values (an upper bound)."""


def write_bytes(write: KvBatchWrite) -> int:
    """An upper bound on what ``write`` adds to a batch request's encoding."""
    texts = (write.key, write.value or "", write.expected or "")
    return WRITE_OVERHEAD_BYTES + sum(len(text.encode()) for text in texts)


Pending = tuple[KvBatchWrite, "asyncio.Future[KvWrite]"]


class BatchingWriter:
    """Puts, cases and deletes through one host's consensus service, each acknowledged on its
    own, sent as batch requests.

    A write waits only while ``in_flight`` batches are out: then the writes made meanwhile go
    together in the next request (up to :data:`MAX_BATCH_WRITES`, and within the endpoint's
    request size), so one writer alone pays one request per write and many writers share
    requests, as a database's group commit does. Writes to one key take effect in the order
    they were made: a write waits while a batch with its key is out. A batch that fails fails
    each of its writes, which, as for a single request, leaves their outcome unknown.
    """

    def __init__(
        self,
        bus: Bus,
        *,
        node: str | None = None,
        in_flight: int = 2,
        timeout: float = 10.0,
        max_request_bytes: int = MAX_PROPOSAL_BYTES // 2,
    ) -> None:
        if in_flight < 1:
            raise ValueError("in_flight must be at least 1")
        self._bus = bus
        self._node = node or bus.node_id
        self._in_flight = in_flight
        self._timeout = timeout
        self._max_request_bytes = max_request_bytes
        self._queue: list[Pending] = []
        self._keys_out: set[str] = set()
        self._sending: set[asyncio.Task[None]] = set()
        self._closed = False
        self.requests = 0
        """Batch requests sent so far."""

    async def put(self, key: str, value: str) -> KvWrite:
        """Write ``value`` under ``key``."""
        return await self.write(KvBatchWrite(op="put", key=key, value=value))

    async def cas(
        self,
        key: str,
        value: str,
        *,
        expected: str | None = None,
        expected_revision: int | None = None,
    ) -> KvWrite:
        """Write ``value`` if the key holds ``expected`` (None: absent), or, with
        ``expected_revision``, if that is its revision."""
        write = KvBatchWrite(
            op="cas", key=key, value=value, expected=expected, expected_revision=expected_revision
        )
        return await self.write(write)

    async def delete(self, key: str) -> KvWrite:
        """Remove ``key``."""
        return await self.write(KvBatchWrite(op="delete", key=key))

    async def write(self, write: KvBatchWrite) -> KvWrite:
        """Send ``write`` with the next batch that may carry it; its outcome."""
        if self._closed:
            raise ConnectionError("the batching writer is closed")
        done: asyncio.Future[KvWrite] = asyncio.get_running_loop().create_future()
        self._queue.append((write, done))
        self._pump()
        return await done

    async def close(self) -> None:
        """Stop sending; writes not yet acknowledged fail, and later ones are refused."""
        self._closed = True
        while self._sending:
            for task in list(self._sending):
                task.cancel()
            await asyncio.gather(*self._sending, return_exceptions=True)
        _fail(self._queue, "the batching writer was closed")
        self._queue.clear()

    def _pump(self) -> None:
        """Send batches while fewer than ``in_flight`` are out and some write may go."""
        while not self._closed and len(self._sending) < self._in_flight:
            taken = self._take()
            if not taken:
                return
            keys = {write.key for write, _ in taken}
            self._keys_out |= keys
            task = asyncio.create_task(self._send(taken))
            self._sending.add(task)
            task.add_done_callback(functools.partial(self._sent, keys))

    def _sent(self, keys: set[str], task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._keys_out -= keys
        self._pump()

    def _take(self) -> list[Pending]:
        """The next batch: waiting writes in order, but none whose key is out (nor any later
        write of that key), within the request's count and size."""
        taken: list[Pending] = []
        kept: list[Pending] = []
        held: set[str] = set()
        size = 0
        for pending in self._queue:
            write, done = pending
            if done.done():  # its caller gave up before it was sent
                continue
            if write.key in self._keys_out or write.key in held:
                held.add(write.key)
                kept.append(pending)
                continue
            size += write_bytes(write)
            if len(taken) == MAX_BATCH_WRITES or (taken and size > self._max_request_bytes):
                held.add(write.key)
                kept.append(pending)
                continue
            taken.append(pending)
        self._queue = kept
        return taken

    async def _send(self, taken: list[Pending]) -> None:
        self.requests += 1
        request = KvBatch(writes=[write for write, _ in taken])
        try:
            reply = await self._bus.request(
                CONSENSUS_BATCH, request, node=self._node, timeout=self._timeout
            )
            if len(reply.writes) != len(taken):
                raise ValueError(f"{len(reply.writes)} outcomes for {len(taken)} writes")
        except asyncio.CancelledError:
            _fail(taken, "the batching writer was closed")
            raise
        except Exception as error:
            _fail(taken, error)
            return
        for (_, done), outcome in zip(taken, reply.writes, strict=True):
            if not done.done():
                done.set_result(outcome)


def _fail(taken: list[Pending], error: Exception | str) -> None:
    """Fail each write (a closed writer's with a ConnectionError saying ``error``)."""
    for _, done in taken:
        if not done.done():
            done.set_exception(ConnectionError(error) if isinstance(error, str) else error)
