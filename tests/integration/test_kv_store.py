"""The hub's KV buckets through leaves: one-read full reads, watches that survive the hub losing
their consumer, no consumers left behind, bucket drift, revision-checked deletes, errors and
trace context."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

import nats.errors
import nats.js.errors
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from meshmind.bus import (
    Bus,
    BusError,
    BusSettings,
    HubUnavailable,
    KeyValue,
    KvEntry,
    KvSnapshot,
    KvWatch,
)
from meshmind.bus._hub_errors import hub_errors
from meshmind.bus.protocol import LinkShape, NodeRef
from meshmind.lab import LocalMesh
from tests.conftest import Connect
from tests.kit.hub_consumers import (
    consumer_names,
    create_stream,
    delete_consumers,
    stream_config,
)
from tests.kit.waiting import eventually

SECOND_NS = 1_000_000_000


@pytest.fixture
async def hub(mesh: LocalMesh) -> AsyncIterator[Bus]:
    bus = await Bus.connect(BusSettings(node_id="observer", nats_url=mesh.hub_url), name="test")
    yield bus
    await bus.close()


async def _bucket(bus: Bus, name: str, **config: object) -> KeyValue[NodeRef]:
    return await bus.hub().key_value(name, NodeRef, **config)  # type: ignore[arg-type]


Item = KvSnapshot[NodeRef] | KvEntry[NodeRef]


async def _next(items: AsyncIterator[Item], within: float = 10) -> Item:
    return await asyncio.wait_for(anext(items), within)


async def test_values_reads_every_key_in_one_consumer_and_deletes_it(
    mesh: LocalMesh, connect: Connect, hub: Bus
) -> None:
    n1, n2 = await connect("n1"), await connect("n2")
    writer = await _bucket(n1, "test-values")
    for i in range(40):
        await writer.put(f"k{i:02d}", NodeRef(node=f"n{i}"))
    await writer.delete("k07")
    mesh.host("n2").link.set_shape(LinkShape(delay_ms=200))
    reader = await n2.hub().key_value("test-values", NodeRef, create=False)

    values = await reader.values()
    keys = await reader.keys()

    expected = {f"k{i:02d}": NodeRef(node=f"n{i}") for i in range(40) if i != 7}
    assert values == expected
    assert keys == sorted(expected)
    await eventually(lambda: _no_consumers(hub, "KV_test-values"), within=10)


async def _no_consumers(hub: Bus, stream: str) -> bool:
    return not await consumer_names(hub, stream)


async def test_an_empty_bucket_reads_as_empty(connect: Connect) -> None:
    bucket = await _bucket(await connect("n1"), "test-empty")
    assert await bucket.values() == {}
    assert await bucket.keys() == []


async def test_a_lost_watch_is_re_established_with_what_changed_meanwhile(
    connect: Connect, hub: Bus
) -> None:
    n1, n3 = await connect("n1"), await connect("n3")
    writer = await _bucket(n1, "test-lost")
    await writer.put("a", NodeRef(node="n1"))
    await writer.put("b", NodeRef(node="n2"))
    watch: KvWatch[NodeRef]
    async with (await _bucket(n3, "test-lost")).follow(heartbeat_s=0.2) as watch:
        items = aiter(watch)
        first = await _next(items)
        assert isinstance(first, KvSnapshot)
        assert set(first.entries) == {"a", "b"}

        assert await delete_consumers(hub, "KV_test-lost") == 1
        await writer.delete("a")  # unseen: the watch has no consumer now
        await writer.put("c", NodeRef(node="n3"))

        again = await _next(items)
        assert isinstance(again, KvSnapshot), again
        assert again.values() == {"b": NodeRef(node="n2"), "c": NodeRef(node="n3")}
        assert watch.restarts == 1

        await writer.put("d", NodeRef(node="n4"))
        change = await _next(items)
        assert isinstance(change, KvEntry)
        assert (change.key, change.value) == ("d", NodeRef(node="n4"))


async def test_a_watch_is_replaying_until_its_snapshot_is_taken_in_and_again_once_lost(
    connect: Connect, hub: Bus
) -> None:
    """What heard meanwhile says only that the hub answers: a reader of the watch (discovery's
    local expiry) must not take the view for current before the snapshot is reconciled."""
    bucket = await _bucket(await connect("n1"), "test-replaying")
    await bucket.put("a", NodeRef(node="n1"))
    async with bucket.follow(heartbeat_s=0.2) as watch:
        items = aiter(watch)
        assert watch.replaying
        assert isinstance(await _next(items), KvSnapshot)
        assert watch.replaying  # handed out, not yet taken in
        following = asyncio.create_task(_next(items, within=20))
        await eventually(lambda: not watch.replaying, within=5)

        await delete_consumers(hub, "KV_test-replaying")

        again = await following
        assert isinstance(again, KvSnapshot)
        assert watch.replaying
        assert watch.restarts == 1


async def test_reads_and_watch_restarts_leave_only_the_live_watchers_consumers(
    connect: Connect, hub: Bus
) -> None:
    n1, n2 = await connect("n1"), await connect("n2")
    bucket = await _bucket(n1, "test-leftovers")
    await bucket.put("a", NodeRef(node="n1"))
    stream = "KV_test-leftovers"

    async def run(watch: KvWatch[NodeRef], seen: list[Item]) -> None:
        async for item in watch:
            seen.append(item)

    watches = [bucket.follow(heartbeat_s=0.2) for _ in range(3)]
    seen: list[list[Item]] = [[] for _ in watches]
    tasks = [asyncio.create_task(run(w, s)) for w, s in zip(watches, seen, strict=True)]
    try:
        await eventually(lambda: all(seen), within=10)

        async def consumers(count: int) -> bool:
            return len(await consumer_names(hub, stream)) == count

        for round_ in range(1, 4):
            await delete_consumers(hub, stream)
            for _ in range(3):
                assert await (await _bucket(n2, "test-leftovers")).values()
            await eventually(functools.partial(_restarted, watches, round_), within=20)
            await eventually(lambda: consumers(3), within=10)
        tasks[0].cancel()
        await watches[0].close()

        await eventually(lambda: consumers(2), within=10)
    finally:
        for task in tasks:
            task.cancel()
        for watch in watches:
            await watch.close()
    await eventually(lambda: _no_consumers(hub, stream), within=10)


def _restarted(watches: list[KvWatch[NodeRef]], times: int) -> bool:
    return all(w.restarts >= times for w in watches)


async def test_a_watch_started_as_generator_replays_then_follows(connect: Connect) -> None:
    n1 = await connect("n1")
    bucket = await _bucket(n1, "test-gen")
    await bucket.put("a", NodeRef(node="n1"))
    changes = bucket.watch()
    first = await asyncio.wait_for(anext(changes), 10)
    await bucket.put("b", NodeRef(node="n2"))
    second = await asyncio.wait_for(anext(changes), 10)
    await changes.aclose()
    assert [(e.key, e.operation) for e in (first, second)] == [("a", "put"), ("b", "put")]


async def test_drift_is_reconciled_where_the_hub_allows_it(connect: Connect, hub: Bus) -> None:
    n1 = await connect("n1")
    await _bucket(n1, "test-drift", ttl_s=3.0, history=1)
    with pytest.raises(BusError, match=r"test-drift.*ttl_s: wanted 10.0, found 3.0.*refused"):
        await _bucket(n1, "test-drift", ttl_s=10.0, history=4, expiry_markers=True)
    assert n1.denied["$JS.hub.API.STREAM.UPDATE.KV_test-drift".lower()] == 1  # no host may

    await _bucket(hub, "test-drift", ttl_s=10.0, history=4, expiry_markers=True)  # the operator

    config = await stream_config(hub, "KV_test-drift")
    assert config["max_age"] == 10 * SECOND_NS
    assert config["max_msgs_per_subject"] == 4
    assert config["subject_delete_marker_ttl"] == 10 * SECOND_NS
    assert config["allow_msg_ttl"] is True


async def test_drift_the_hub_cannot_change_is_refused_by_name(connect: Connect, hub: Bus) -> None:
    n1 = await connect("n1")
    await _bucket(n1, "test-one-replica", ttl_s=3.0)
    with pytest.raises(BusError) as refused:
        await _bucket(n1, "test-one-replica", ttl_s=3.0, replicas=3)
    message = str(refused.value)
    assert "test-one-replica" in message
    assert "replicas: wanted 3, found 1" in message

    await create_stream(
        hub,
        {
            "name": "KV_test-in-memory",
            "subjects": ["$KV.test-in-memory.>"],
            "storage": "memory",
            "max_msgs_per_subject": 1,
            "allow_rollup_hdrs": True,
            "deny_delete": True,
        },
    )
    with pytest.raises(BusError, match=r"test-in-memory.*storage: wanted 'file', found 'memory'"):
        await _bucket(n1, "test-in-memory")
    assert (await stream_config(hub, "KV_test-in-memory"))["storage"] == "memory"


async def test_a_reader_binds_a_bucket_as_it_is(connect: Connect, hub: Bus) -> None:
    n1 = await connect("n1")
    await _bucket(n1, "test-as-is", ttl_s=3.0)
    await n1.hub().key_value("test-as-is", NodeRef, create=False)
    assert (await stream_config(hub, "KV_test-as-is"))["max_age"] == 3 * SECOND_NS
    with pytest.raises(KeyError):
        await n1.hub().key_value("test-absent", NodeRef, create=False)


async def test_a_delete_with_a_revision_deletes_only_that_revision(connect: Connect) -> None:
    n1, n2 = await connect("n1"), await connect("n2")
    mine = await _bucket(n1, "test-owner")
    theirs = await _bucket(n2, "test-owner")
    first = await mine.put("n9", NodeRef(node="n9"))
    second = await theirs.put("n9", NodeRef(node="n9"))

    assert await mine.delete("n9", revision=first) is False
    assert await mine.get("n9") is not None
    assert await theirs.delete("n9", revision=second) is True
    assert await mine.get("n9") is None


async def test_a_put_carries_the_writers_trace_to_the_watcher(
    connect: Connect, spans: InMemorySpanExporter
) -> None:
    n1, n3 = await connect("n1"), await connect("n3")
    writer = await _bucket(n1, "test-traced")
    async with (await _bucket(n3, "test-traced")).follow() as watch:
        items = aiter(watch)
        assert isinstance(await _next(items), KvSnapshot)
        with trace.get_tracer("test").start_as_current_span("operator action") as parent:
            await writer.put("a", NodeRef(node="n1"))
        entry = await _next(items)

    assert isinstance(entry, KvEntry)
    carried = trace.get_current_span(entry.context).get_span_context()
    assert carried.trace_id == parent.get_span_context().trace_id
    put = next(s for s in spans.get_finished_spans() if s.name.startswith("publish $KV"))
    assert put.attributes is not None
    assert put.attributes["messaging.system"] == "nats"
    assert put.attributes["messaging.destination.name"] == "$KV.test-traced.a"
    assert put.attributes["messaging.operation"] == "publish"
    assert put.context is not None
    assert put.context.trace_id == carried.trace_id


async def test_an_unreachable_hub_is_hub_unavailable(mesh: LocalMesh, connect: Connect) -> None:
    n1 = await connect("n1")
    bucket = await _bucket(n1, "test-cut")
    await mesh.host("n1").link.cut()
    with pytest.raises(HubUnavailable):
        await bucket.put("a", NodeRef(node="n1"))
    with pytest.raises(HubUnavailable):
        await bucket.values()


@pytest.mark.parametrize(
    ("raised", "mapped"),
    [
        (nats.errors.OutboundBufferLimitError(), HubUnavailable),
        (nats.errors.ConnectionReconnectingError(), HubUnavailable),
        (nats.errors.StaleConnectionError(), HubUnavailable),
        (nats.errors.ConnectionClosedError(), HubUnavailable),
        (nats.errors.TimeoutError(), HubUnavailable),
        (nats.js.errors.ServiceUnavailableError(), HubUnavailable),
        (nats.js.errors.BadRequestError(description="no"), BusError),
        (nats.js.errors.APIError(code=500, description="boom"), BusError),
        (nats.errors.BadSubjectError(), BusError),
        (nats.errors.Error("anything"), BusError),
    ],
)
def test_every_nats_error_becomes_a_bus_error(raised: Exception, mapped: type[BusError]) -> None:
    with pytest.raises(BusError) as caught, hub_errors("put x"):
        raise raised
    assert type(caught.value) is mapped
    assert "put x" in str(caught.value)
