"""Writes made at once from one process, coalesced into batch requests to a consensus service."""

from __future__ import annotations

import asyncio
import contextlib

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


class BatchingWriter:
    """Puts, cases and deletes through one host's consensus service, each acknowledged on its
    own, sent as batch requests.

    A write waits only while ``in_flight`` batches are out: then the writes made meanwhile go
    together in the next request (up to :data:`MAX_BATCH_WRITES`, and within the endpoint's
    request size), so one writer alone pays one request per write and many writers share
    requests, as a database's group commit does. Writes to one key take effect in the order
    they were made. A batch that fails fails each of its writes with the same error, which,
    as for a single request, leaves their outcome unknown.
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
        self._timeout = timeout
        self._max_request_bytes = max_request_bytes
        self._queue: list[tuple[KvBatchWrite, asyncio.Future[KvWrite]]] = []
        self._slots = asyncio.Semaphore(in_flight)
        self._sending: set[asyncio.Task[None]] = set()
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
        """Send ``write`` with the next batch; its outcome."""
        done: asyncio.Future[KvWrite] = asyncio.get_running_loop().create_future()
        self._queue.append((write, done))
        if len(self._queue) == 1:
            task = asyncio.create_task(self._send_when_free())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return await done

    async def close(self) -> None:
        """Stop sending; writes not yet acknowledged fail."""
        for task in list(self._sending):
            task.cancel()
        for task in list(self._sending):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        _fail(self._queue, ConnectionError("the batching writer was closed"))
        self._queue.clear()

    async def _send_when_free(self) -> None:
        async with self._slots:
            taken = self._take()
            if not taken:  # an earlier sender took these writes
                return
            if self._queue:  # more than one request's worth: the rest go next
                task = asyncio.create_task(self._send_when_free())
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)
            await self._send(taken)

    def _take(self) -> list[tuple[KvBatchWrite, asyncio.Future[KvWrite]]]:
        size = 0
        count = 0
        for write, _ in self._queue[:MAX_BATCH_WRITES]:
            size += write_bytes(write)
            if count and size > self._max_request_bytes:
                break
            count += 1
        taken, self._queue = self._queue[:count], self._queue[count:]
        return taken

    async def _send(self, taken: list[tuple[KvBatchWrite, asyncio.Future[KvWrite]]]) -> None:
        self.requests += 1
        request = KvBatch(writes=[write for write, _ in taken])
        try:
            reply = await self._bus.request(
                CONSENSUS_BATCH, request, node=self._node, timeout=self._timeout
            )
            if len(reply.writes) != len(taken):
                raise ValueError(f"{len(reply.writes)} outcomes for {len(taken)} writes")
        except asyncio.CancelledError:
            _fail(taken, ConnectionError("the batching writer was closed"))
            raise
        except Exception as error:
            _fail(taken, error)
            return
        for (_, done), outcome in zip(taken, reply.writes, strict=True):
            if not done.done():
                done.set_result(outcome)


def _fail(taken: list[tuple[KvBatchWrite, asyncio.Future[KvWrite]]], error: Exception) -> None:
    for _, done in taken:
        if not done.done():
            done.set_exception(error)
