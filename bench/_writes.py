"""Timing writes the same way for every system: one at a time, many at once, and after a kill."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Write = Callable[[int], Awaitable[bool]]
"""Makes write number ``n``; true when the system acknowledged it as committed."""

FAILOVER_EVERY_S = 0.02
FAILOVER_ATTEMPT_TIMEOUT_S = 1.0


async def sequential_latencies_ms(write: Write, count: int, *, first: int = 0) -> list[float]:
    """Milliseconds of ``count`` acknowledged writes made one after another."""
    samples = []
    for n in range(first, first + count):
        start = time.perf_counter()
        if not await write(n):
            raise RuntimeError(f"write {n} was not acknowledged")
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


async def concurrent_throughput(
    write: Write, count: int, concurrency: int, *, first: int = 0
) -> float:
    """Acknowledged writes per second with ``concurrency`` writers sharing ``count`` writes."""
    numbers = iter(range(first, first + count))

    async def writer() -> None:
        for n in numbers:
            if not await write(n):
                raise RuntimeError(f"write {n} was not acknowledged")

    start = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(concurrency)))
    return count / (time.perf_counter() - start)


async def first_success_after_s(
    kill: Callable[[], Awaitable[None]],
    attempt: Callable[[int, float], Awaitable[bool]],
    *,
    within_s: float = 30.0,
) -> float:
    """Seconds from the start of ``kill`` until the first acknowledged write, starting one
    attempt (with a 1 s deadline) every 20 ms; attempts still out when one succeeds are
    cancelled."""
    killed_at = time.perf_counter()
    await kill()
    succeeded = asyncio.Event()
    done_at: list[float] = []

    async def one(n: int) -> None:
        try:
            ok = await attempt(n, FAILOVER_ATTEMPT_TIMEOUT_S)
        except Exception:
            return
        if ok and not done_at:
            done_at.append(time.perf_counter())
            succeeded.set()

    tasks: set[asyncio.Task[None]] = set()
    n = 0
    try:
        while not succeeded.is_set():
            if time.perf_counter() - killed_at > within_s:
                raise TimeoutError(f"no write succeeded within {within_s:g}s of the kill")
            task = asyncio.create_task(one(n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
            await asyncio.sleep(FAILOVER_EVERY_S)
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return done_at[0] - killed_at
