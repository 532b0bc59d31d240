"""The batching writer against a real mesh: writes made at once share requests, each answered."""

from __future__ import annotations

import asyncio

import pytest

from meshmind.bus import Bus, NoResponders, ServiceError, ServiceKit
from meshmind.bus.protocol import (
    CONSENSUS_BATCH,
    CONSENSUS_SERVICE,
    MAX_BATCH_WRITES,
    KvBatch,
    KvBatchResult,
)
from meshmind.consensus import BatchingWriter, LocalStore
from tests.conftest import Connect
from tests.kit.waiting import eventually


class BatchEndpoint:
    """n1's batch endpoint over an in-process store; records each request's size."""

    def __init__(self, fail_with: int | None = None, delay_s: float = 0.0) -> None:
        self.store = LocalStore("n1")
        self.sizes: list[int] = []
        self.spans: list[tuple[set[str], float, float]] = []
        """Each request's keys, and when it came and was answered."""
        self.fail_with = fail_with
        self.delay_s = delay_s

    async def serve(self, bus: Bus) -> None:
        kit = ServiceKit(bus, CONSENSUS_SERVICE, "1.0.0")
        loop = asyncio.get_running_loop()

        async def batch(request: KvBatch) -> KvBatchResult:
            came = loop.time()
            self.sizes.append(len(request.writes))
            if self.fail_with is not None:
                raise ServiceError(self.fail_with, "no leader")
            await asyncio.sleep(self.delay_s)
            result = KvBatchResult(writes=await self.store.batch(request.writes))
            self.spans.append(({w.key for w in request.writes}, came, loop.time()))
            return result

        kit.endpoint(CONSENSUS_BATCH, batch, node="n1")
        await kit.start()
        await eventually(lambda: _served(bus), within=10)


async def _served(bus: Bus) -> bool:
    writer = BatchingWriter(bus, node="n1", timeout=1)
    try:
        await writer.delete("probe")
    except NoResponders:
        return False
    except ServiceError:
        pass  # served, and refusing as asked
    finally:
        await writer.close()
    return True


async def test_writes_made_at_once_share_requests_and_keep_each_keys_order(
    connect: Connect,
) -> None:
    endpoint = BatchEndpoint()
    await endpoint.serve(await connect("n1"))
    endpoint.sizes.clear()
    writer = BatchingWriter(await connect("n2"), node="n1")
    try:
        outcomes = await asyncio.gather(
            *(writer.put(f"k{n}", str(n)) for n in range(600)),
            *(writer.put("counter", str(n)) for n in range(50)),
        )
    finally:
        await writer.close()
    assert all(outcome.ok for outcome in outcomes)
    assert [o.key for o in outcomes] == [*(f"k{n}" for n in range(600)), *["counter"] * 50]
    assert sum(endpoint.sizes) == 650
    assert max(endpoint.sizes) <= MAX_BATCH_WRITES
    assert len(endpoint.sizes) == writer.requests < 10
    assert (await endpoint.store.get("counter")).value == "49"
    assert (await endpoint.store.get("k599")).value == "599"


async def test_a_write_waits_while_a_batch_with_its_key_is_out(connect: Connect) -> None:
    endpoint = BatchEndpoint(delay_s=0.2)
    await endpoint.serve(await connect("n1"))
    endpoint.spans.clear()
    writer = BatchingWriter(await connect("n2"), node="n1", in_flight=2)
    try:
        first = asyncio.ensure_future(writer.put("k", "0"))
        await asyncio.sleep(0.05)  # out, and a request slot still free
        rest = await asyncio.gather(writer.put("k", "1"), writer.put("other", "x"))
        assert (await first).ok
        assert all(o.ok for o in rest)
    finally:
        await writer.close()
    with_k = sorted((came, answered) for keys, came, answered in endpoint.spans if "k" in keys)
    assert len(with_k) == 2
    assert with_k[1][0] >= with_k[0][1]  # the second came only once the first was answered
    other = [came for keys, came, _ in endpoint.spans if keys == {"other"}]
    assert other
    assert other[0] < with_k[0][1]
    assert (await endpoint.store.get("k")).value == "1"


async def test_a_closed_writer_refuses_writes(connect: Connect) -> None:
    writer = BatchingWriter(await connect("n2"), node="n1")
    await writer.close()
    with pytest.raises(ConnectionError, match="closed"):
        await writer.put("k", "v")


async def test_a_lone_write_goes_at_once_in_a_request_of_its_own(connect: Connect) -> None:
    endpoint = BatchEndpoint()
    await endpoint.serve(await connect("n1"))
    endpoint.sizes.clear()
    writer = BatchingWriter(await connect("n2"), node="n1")
    try:
        for n in range(3):
            assert (await writer.cas("lone", str(n), expected=None if n == 0 else str(n - 1))).ok
    finally:
        await writer.close()
    assert endpoint.sizes == [1, 1, 1]


async def test_batches_stay_within_the_request_size(connect: Connect) -> None:
    endpoint = BatchEndpoint()
    await endpoint.serve(await connect("n1"))
    endpoint.sizes.clear()
    writer = BatchingWriter(await connect("n2"), node="n1", max_request_bytes=4096)
    try:
        await asyncio.gather(*(writer.put(f"big{n}", "v" * 1000) for n in range(40)))
    finally:
        await writer.close()
    assert sum(endpoint.sizes) == 40
    assert max(endpoint.sizes) <= 3


async def test_a_failed_batch_fails_each_of_its_writes(connect: Connect) -> None:
    endpoint = BatchEndpoint(fail_with=503)
    await endpoint.serve(await connect("n1"))
    writer = BatchingWriter(await connect("n2"), node="n1")
    try:
        outcomes = await asyncio.gather(
            *(writer.put(f"k{n}", "v") for n in range(20)), return_exceptions=True
        )
    finally:
        await writer.close()
    assert all(isinstance(o, ServiceError) and o.code == 503 for o in outcomes)


async def test_writes_to_a_host_nobody_serves_fail_with_no_responders(connect: Connect) -> None:
    writer = BatchingWriter(await connect("n2"), node="n3", timeout=2)
    try:
        outcomes = await asyncio.gather(
            *(writer.put(f"k{n}", "v") for n in range(5)), return_exceptions=True
        )
    finally:
        await writer.close()
    assert all(isinstance(o, NoResponders) for o in outcomes)
    assert writer.requests <= 3  # two go at once, the other three share a request


async def test_a_writer_needs_a_request_in_flight(connect: Connect) -> None:
    with pytest.raises(ValueError, match="in_flight"):
        BatchingWriter(await connect("n2"), in_flight=0)
