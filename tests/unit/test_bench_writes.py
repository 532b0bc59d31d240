"""The benchmark's write timing: every write made once, failures surfaced, failover attempts
stopped at the first success."""

from __future__ import annotations

import asyncio

import pytest
from bench._writes import concurrent_throughput, first_success_after_s, sequential_latencies_ms


async def test_concurrent_writers_make_each_write_exactly_once() -> None:
    made: list[int] = []

    async def write(n: int) -> bool:
        await asyncio.sleep(0)
        made.append(n)
        return True

    rate = await concurrent_throughput(write, 500, 16, first=1000)
    assert sorted(made) == list(range(1000, 1500))
    assert rate > 0


async def _all_but_7(n: int) -> bool:
    return n != 7


async def test_an_unacknowledged_write_fails_a_latency_run() -> None:
    with pytest.raises(RuntimeError, match="write 7"):
        await sequential_latencies_ms(_all_but_7, 20)


async def test_an_unacknowledged_write_fails_a_throughput_run() -> None:
    with pytest.raises(RuntimeError, match="write 7"):
        await concurrent_throughput(_all_but_7, 20, 4)


async def test_failover_counts_from_the_kill_to_the_first_success_and_cancels_the_rest() -> None:
    started: list[int] = []
    cancelled: list[int] = []
    killed = asyncio.Event()

    async def kill() -> None:
        killed.set()

    async def attempt(n: int, timeout: float) -> bool:
        assert killed.is_set()
        started.append(n)
        if n < 3:
            raise ConnectionError("no leader yet")
        if n == 3:
            try:
                await asyncio.sleep(timeout)  # left hanging, as a request to a dead leader is
            except asyncio.CancelledError:
                cancelled.append(n)
                raise
        return True

    seconds = await first_success_after_s(kill, attempt)
    assert 4 in started
    assert cancelled == [3]
    assert 0 < seconds < 1.0


async def test_failover_gives_up_when_nothing_succeeds() -> None:
    async def kill() -> None:
        return None

    async def attempt(n: int, timeout: float) -> bool:
        return False

    with pytest.raises(TimeoutError):
        await first_success_after_s(kill, attempt, within_s=0.2)
