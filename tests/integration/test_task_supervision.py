"""No failure escapes the bus unmapped, and no background task dies silently: a failed task is
logged with its traceback, counted in ``$SRV.STATS`` and started again."""

from __future__ import annotations

import asyncio
import json

import pytest
import structlog
from structlog.testing import capture_logs

import meshmind.bus._supervision
from meshmind.bus import (
    Bus,
    BusError,
    Disconnected,
    Empty,
    ServiceKit,
    background,
    task_restarts,
)
from meshmind.bus.protocol import HEALTH_LINKS, HEALTH_SERVICE, LinkList
from meshmind.lab import LocalMesh
from tests.conftest import Connect
from tests.kit.waiting import eventually

PENDING_BYTES = 256


async def sends_until_disconnected(bus: Bus) -> tuple[int, str]:
    """Publish until the bus says it is disconnected: how many were buffered, and why not more."""
    for sent in range(100):
        try:
            await bus.publish_raw("mesh.test.buffered", b"x" * 32)
        except Disconnected as error:
            return sent, str(error)
    raise AssertionError("100 sends while disconnected and the buffer never filled")


async def test_sends_fail_as_disconnected_once_the_reconnect_buffer_is_full(
    mesh: LocalMesh, connect: Connect
) -> None:
    bus = await connect("n1", nats_pending_bytes=PENDING_BYTES)
    leaf = mesh.host("n1").server
    await leaf.kill()
    await eventually(lambda: not bus.is_connected, within=10)

    buffered, reason = await sends_until_disconnected(bus)
    assert buffered >= 2, "sends are buffered while reconnecting, until the buffer is full"
    assert "OutboundBufferLimitError" in reason
    with pytest.raises(Disconnected):
        await bus.request(HEALTH_LINKS, Empty(), node="n2", timeout=1)
    with pytest.raises(Disconnected):
        await bus.request_raw("mesh.test.anyone", b"", timeout=1)

    await leaf.start()
    await eventually(lambda: bus.is_connected, within=20)
    await bus.publish_raw("mesh.test.buffered", b"x")
    await bus.flush()

    await bus.close()
    with pytest.raises(Disconnected):
        await bus.publish_raw("mesh.test.closed", b"x")
    with pytest.raises(Disconnected):
        await bus.request(HEALTH_LINKS, Empty(), node="n2", timeout=1)

    async def ignore(_: object) -> None:
        return None

    with pytest.raises(Disconnected):
        await bus.subscribe_raw("mesh.test.closed", ignore)
    with pytest.raises(BusError):
        await bus.flush()


async def test_a_failing_task_is_logged_counted_and_started_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = 0
    healthy = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise RuntimeError(f"run {runs} fails")
        healthy.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(meshmind.bus._supervision, "_log", structlog.get_logger("supervision"))
    before = task_restarts().get("flaky-test", 0)
    with capture_logs() as logs:
        task = background(flaky, "flaky-test")
        await asyncio.wait_for(healthy.wait(), 10)
    try:
        assert runs == 3
        assert task_restarts()["flaky-test"] - before == 2
        failures = [e for e in logs if e["event"] == "task.failed"]
        assert [f["restart_in_s"] for f in failures] == [0.1, 0.2]
        assert all(f["exc_info"] and f["task"] == "flaky-test" for f in failures)
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert runs == 3, "a cancelled task is not started again"


async def test_a_task_that_returns_is_done_and_not_restarted() -> None:
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    task = background(once, "once-test")
    await asyncio.wait_for(task, 5)
    await asyncio.sleep(0.3)
    assert runs == 1
    assert "once-test" not in task_restarts()


async def test_restarts_show_in_the_services_stats(mesh: LocalMesh, connect: Connect) -> None:
    bus = await connect("n1")
    kit = ServiceKit(bus, HEALTH_SERVICE, "0.0.0")

    async def links(_: Empty) -> LinkList:
        return LinkList(node="n1", links=[])

    kit.endpoint(HEALTH_LINKS, links, node="n1")
    await kit.start()
    failed = asyncio.Event()

    async def broken() -> None:
        failed.set()
        raise RuntimeError("broken for good")

    task = background(broken, "broken-test")
    try:
        await asyncio.wait_for(failed.wait(), 5)
        observer = await connect("n2", name="observer")

        async def counted() -> bool:
            replies = await observer.gather_raw(f"$SRV.STATS.{HEALTH_SERVICE}", wait=0.3)
            for reply in replies:
                stats = json.loads(reply.data)
                if stats["metadata"]["node"] == "n1":
                    data = stats["endpoints"][0]["data"]
                    return bool(data["task_restarts"].get("broken-test", 0) >= 1)
            return False

        await eventually(counted, within=10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await kit.stop()
