"""The PySyncObj baseline: a ``ReplDict`` cluster, one process per node, and a read-only client
node that measures commit latency and throughput."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pysyncobj import (
    FAIL_REASON,
    SyncObj,
    SyncObjConf,
    SyncObjException,
)
from pysyncobj.batteries import ReplDict

from bench._cpu import cpu_used_since, tree_cpu_by_program
from bench._report import percentile
from meshmind.lab import ManagedProcess, free_ports

Mode = Literal["batch", "nobatch"]
NODE_SCRIPT = Path(__file__).resolve().parent / "_pysyncobj_node.py"
READY_WITHIN_S = 60.0
ATTEMPTS = 3
"""Tries per repetition: one fails when PySyncObj loses its leader mid-run (under load its
default election timeouts of 0.4-1.4 s can expire)."""
WRITE_TIMEOUT_S = 10.0
CALLBACKS_WITHIN_S = 30.0
WARMUP = 50
VALUE = "v" * 16


class CountingHandler(logging.Handler):
    """Counts what PySyncObj logs instead of printing it, so a run can report it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        first_words = " ".join(str(record.msg).split()[:4])
        self.messages[first_words] = self.messages.get(first_words, 0) + 1


def count_pysyncobj_logs() -> CountingHandler:
    """Route the ``pysyncobj`` loggers of this process to a counter."""
    handler = CountingHandler()
    logger = logging.getLogger("pysyncobj")
    logger.addHandler(handler)
    logger.propagate = False
    return handler


@dataclass
class PySyncObjFigures:
    """Per-repetition figures of one cluster size."""

    p50_ms: list[float] = field(default_factory=list)
    throughput: dict[Mode, list[float]] = field(
        default_factory=lambda: {"batch": [], "nobatch": []}
    )
    cpu_ms_per_write: dict[Mode, list[float]] = field(
        default_factory=lambda: {"batch": [], "nobatch": []}
    )
    """CPU of the whole run (nodes and client) per write, during each throughput run."""
    retried: list[str] = field(default_factory=list)
    """Why repetitions were made again."""

    def best_throughput(self) -> tuple[Mode, float]:
        """The faster mode and the median of its repetitions."""
        medians: dict[Mode, float] = {
            mode: sorted(samples)[len(samples) // 2]
            for mode, samples in self.throughput.items()
            if samples
        }
        mode = max(medians, key=lambda m: medians[m])
        return mode, medians[mode]


class WriteFailed(Exception):
    """PySyncObj refused or lost writes of a run."""


@dataclass
class Client:
    """The read-only node in this process and its ``ReplDict``."""

    node: Any
    store: Any

    async def ready(self) -> None:
        """Wait until the node is in sync and knows a leader."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_WITHIN_S
        while not (self.node.isReady() and self.node.getStatus()["leader"] is not None):
            if loop.time() > deadline:
                raise TimeoutError("the PySyncObj cluster has no leader")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def pysyncobj_cluster(run_dir: Path, size: int, mode: Mode) -> AsyncIterator[Client]:
    """``size`` PySyncObj node processes in ``mode``, and a read-only node in this process,
    once that node is ready (each process creates ``run_dir`` for its log
    before it starts, so the journals have their directory)."""
    addresses = [f"127.0.0.1:{p}" for p in free_ports(size)]
    processes = []
    for index, address in enumerate(addresses):
        peers = [a for a in addresses if a != address]
        argv = [sys.executable, str(NODE_SCRIPT), address, str(run_dir / f"node{index}.journal")]
        processes.append(
            ManagedProcess(
                f"pysyncobj{index}",
                [*argv, mode, *peers],
                log_path=run_dir / f"node{index}.log",
            )
        )
    node: Any = None
    try:
        for process in processes:
            await process.start()
        conf = SyncObjConf(appendEntriesUseBatch=mode == "batch")
        store = ReplDict()
        node = SyncObj(None, addresses, conf=conf, consumers=[store])
        client = Client(node, store)
        await client.ready()
        yield client
    finally:
        if node is not None:
            await asyncio.to_thread(node.destroy_synchronous)
        for process in processes:
            await process.kill()


def sync_latencies_ms(store: Any, count: int, prefix: str) -> list[float]:
    """Milliseconds of ``count`` ``set(..., sync=True)`` calls on ``store``, one after another."""
    samples = []
    for n in range(count):
        start = time.perf_counter()
        try:
            store.set(f"{prefix}{n}", VALUE, sync=True, timeout=WRITE_TIMEOUT_S)
        except SyncObjException as error:
            raise WriteFailed(f"sync write {n} failed: {error}") from None
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def callback_throughput(store: Any, count: int, prefix: str) -> float:
    """Writes per second of ``count`` ``set`` calls on ``store`` issued at once, counted by
    callbacks."""
    left = [count]
    failures: list[int] = []
    done = threading.Event()

    def on_result(_: object, error: int) -> None:
        if error != FAIL_REASON.SUCCESS:
            failures.append(error)
        left[0] -= 1
        if left[0] == 0:
            done.set()

    callback: Callable[[object, int], None] = on_result
    start = time.perf_counter()
    for n in range(count):
        store.set(f"{prefix}{n}", VALUE, callback=callback)
    if not done.wait(CALLBACKS_WITHIN_S):
        raise WriteFailed(f"{left[0]} of {count} writes never called back")
    elapsed = time.perf_counter() - start
    if failures:
        raise WriteFailed(f"{len(failures)} of {count} writes failed (reasons {set(failures)})")
    return count / elapsed


async def measure(
    run_dir: Path, size: int, *, samples: int, writes: int, repeats: int
) -> PySyncObjFigures:
    """Latency in no-batch mode and throughput in both modes, ``repeats`` times each, on one
    cluster per mode."""
    figures = PySyncObjFigures()
    for mode in ("nobatch", "batch"):
        async with pysyncobj_cluster(run_dir / f"{size}-{mode}", size, mode) as client:

            async def warm_up(attempt: int, client: Client = client) -> None:
                await asyncio.to_thread(sync_latencies_ms, client.store, WARMUP, f"w{attempt}/")

            label = f"{size} nodes, {mode}"
            await retried(client, figures, f"{label}, warming up", warm_up)
            for index in range(repeats):

                async def repetition(
                    attempt: int, client: Client = client, mode: Mode = mode, index: int = index
                ) -> None:
                    prefix = f"{index}.{attempt}/"
                    await one_repetition(
                        client, mode, figures, prefix, samples=samples, writes=writes
                    )

                await retried(client, figures, label, repetition)
    return figures


async def retried(
    client: Client,
    figures: PySyncObjFigures,
    label: str,
    attempt: Callable[[int], Awaitable[None]],
) -> None:
    """``attempt(n)`` until one has no failed write, ``ATTEMPTS`` times at most; each failure
    is noted in ``figures.retried`` and the cluster given time to have a leader again."""
    for n in range(ATTEMPTS):
        try:
            await attempt(n)
            return
        except WriteFailed as error:
            if n == ATTEMPTS - 1:
                raise
            figures.retried.append(f"{label}: {error}")
            await client.ready()


async def one_repetition(
    client: Client, mode: Mode, figures: PySyncObjFigures, prefix: str, *, samples: int, writes: int
) -> None:
    """Latency (no-batch mode only) and throughput once; nothing is recorded if a write fails."""
    p50 = None
    if mode == "nobatch":
        latencies = await asyncio.to_thread(sync_latencies_ms, client.store, samples, f"l{prefix}")
        p50 = percentile(latencies, 50)
    cpu_before = tree_cpu_by_program()
    rate = await asyncio.to_thread(callback_throughput, client.store, writes, f"t{prefix}")
    cpu_ms = sum(cpu_used_since(cpu_before, writes).values())
    if p50 is not None:
        figures.p50_ms.append(p50)
    figures.throughput[mode].append(rate)
    figures.cpu_ms_per_write[mode].append(cpu_ms)
