"""meshmind's consensus service measured through its endpoints on a lab: put latency, put
throughput under concurrency, and the time to the first write after the leader's host dies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.kit.consensus import ask, connect, consensus_lab, wait_for_leader
from tests.kit.waiting import eventually

from bench._cpu import cpu_used_since, tree_cpu_by_program
from bench._report import percentile
from bench._writes import (
    concurrent_throughput,
    first_success_after_s,
    sequential_latencies_ms,
)
from meshmind.bus import Bus, BusError
from meshmind.bus.protocol import CONSENSUS_PUT, KvPut
from meshmind.consensus import BatchingWriter
from meshmind.lab import LocalMesh, node_names

VALUE = "v" * 16
WARMUP = 50
REQUEST_TIMEOUT_S = 10.0
SWEEP_WRITES = 400
BATCHED_WRITERS = 512
"""Writers at once sharing one batching writer (PySyncObj's are all of its writes)."""
BATCHED_WRITES_PER_SINGLE = 20
"""The batched runs make this many times the writes of a single-request run (they are
faster, and a run must outlast its start)."""
RECOVER_WITHIN_S = 60.0
ATTEMPTS = 3
"""Tries per repetition, as for PySyncObj: a repetition with a failed write is made again."""


@dataclass
class LabFigures:
    """Per-repetition figures of one lab."""

    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)
    """Writes per second through a :class:`BatchingWriter` shared by ``BATCHED_WRITERS``."""
    cpu_ms_per_write: list[float] = field(default_factory=list)
    """CPU of the whole run (servers, services, emulated links, client) per write, during
    each batched throughput run."""
    cpu_ms_per_write_by_program: list[dict[str, float]] = field(default_factory=list)
    """The same, split by the program that used it."""
    writes_per_request: list[float] = field(default_factory=list)
    """How many writes each batch request carried, on average."""
    single_throughput: list[float] = field(default_factory=list)
    """Writes per second with one request per write, ``concurrency`` requesters."""
    single_cpu_ms_per_write: list[float] = field(default_factory=list)
    """CPU per write during the single-request throughput runs."""
    sweep: dict[int, float] = field(default_factory=dict)
    """Writes per second at each concurrency tried, one short run each."""
    concurrency: int = 0
    """The concurrency of ``single_throughput``: the sweep's best."""
    failover_s: list[float] = field(default_factory=list)
    entry_host: str = ""
    """The host whose endpoint the latency and throughput requests went to."""
    retried: list[str] = field(default_factory=list)
    """Why repetitions were made again."""


class Putter:
    """Puts through one host's consensus endpoint, each to a key of its own."""

    def __init__(self, bus: Bus, node: str, prefix: str) -> None:
        self.bus = bus
        self.node = node
        self.prefix = prefix

    async def put(self, n: int) -> bool:
        """One acknowledged put (errors propagate)."""
        request = KvPut(key=f"{self.prefix}{n}", value=VALUE)
        reply = await self.bus.request(
            CONSENSUS_PUT, request, node=self.node, timeout=REQUEST_TIMEOUT_S
        )
        return reply.ok

    async def put_within(self, n: int, timeout: float) -> bool:
        """One put; false when it failed or was not acknowledged within ``timeout`` seconds."""
        request = KvPut(key=f"{self.prefix}{n}", value=VALUE)
        try:
            reply = await self.bus.request(CONSENSUS_PUT, request, node=self.node, timeout=timeout)
        except BusError:
            return False
        return reply.ok


async def entry_host(mesh: LocalMesh, backend: str) -> str:
    """The host requests go to: the Raft leader's (as the JetStream client sits on the stream
    leader's server), or the first host for the jetstream backend (its leader is the hub's)."""
    bus = await connect(mesh, mesh.nodes[0], name="bench-leader")
    try:
        leader = await wait_for_leader(bus, within=RECOVER_WITHIN_S)
    finally:
        await bus.close()
    return leader if backend == "raft" else mesh.nodes[0]


async def latency_and_throughput(
    bus: Bus,
    node: str,
    figures: LabFigures,
    *,
    samples: int,
    writes: int,
    repeats: int,
    concurrencies: Sequence[int],
) -> None:
    """Sequential put latency and concurrent put throughput through ``node``'s endpoint."""
    await ask(bus, CONSENSUS_PUT, KvPut(key="warm", value=VALUE), timeout=REQUEST_TIMEOUT_S)
    await sequential_latencies_ms(Putter(bus, node, "warm/").put, WARMUP)
    for concurrency in concurrencies:
        putter = Putter(bus, node, f"sweep{concurrency}/")
        figures.sweep[concurrency] = await concurrent_throughput(
            putter.put, SWEEP_WRITES, concurrency
        )
    figures.concurrency = max(figures.sweep, key=lambda c: figures.sweep[c])
    for index in range(repeats):
        for attempt in range(ATTEMPTS):
            try:
                await one_repetition(
                    bus, node, figures, f"{index}.{attempt}/", samples=samples, writes=writes
                )
                break
            except (BusError, RuntimeError) as error:
                if attempt == ATTEMPTS - 1:
                    raise
                figures.retried.append(f"{type(error).__name__}: {error}")
                await wait_for_leader(bus, within=RECOVER_WITHIN_S)


async def one_repetition(
    bus: Bus, node: str, figures: LabFigures, prefix: str, *, samples: int, writes: int
) -> None:
    """Latency and throughput once; nothing is recorded if a write fails."""
    latencies = await sequential_latencies_ms(Putter(bus, node, f"l{prefix}").put, samples)
    cpu_before = tree_cpu_by_program()
    single = await concurrent_throughput(
        Putter(bus, node, f"t{prefix}").put, writes, figures.concurrency
    )
    single_cpu_ms = cpu_used_since(cpu_before, writes)
    writer = BatchingWriter(bus, node=node, timeout=REQUEST_TIMEOUT_S)
    batched_writes = writes * BATCHED_WRITES_PER_SINGLE

    async def put(n: int) -> bool:
        return (await writer.put(f"b{prefix}{n}", VALUE)).ok

    try:
        cpu_before = tree_cpu_by_program()
        batched = await concurrent_throughput(put, batched_writes, BATCHED_WRITERS)
        cpu_ms = cpu_used_since(cpu_before, batched_writes)
    finally:
        await writer.close()
    figures.p50_ms.append(percentile(latencies, 50))
    figures.p99_ms.append(percentile(latencies, 99))
    figures.single_throughput.append(single)
    figures.single_cpu_ms_per_write.append(sum(single_cpu_ms.values()))
    figures.throughput.append(batched)
    figures.cpu_ms_per_write.append(sum(cpu_ms.values()))
    figures.cpu_ms_per_write_by_program.append(cpu_ms)
    figures.writes_per_request.append(batched_writes / writer.requests)


async def failovers(mesh: LocalMesh, figures: LabFigures, repeats: int) -> None:
    """``repeats`` times: kill -9 the leader's host services, time the first put acknowledged
    through another host, then restart the killed services and wait for them to serve."""
    for index in range(repeats):
        leader = await entry_host(mesh, "raft")
        survivor = next(n for n in mesh.nodes if n != leader)
        bus = await connect(mesh, survivor, name="bench-failover")
        try:
            putter = Putter(bus, survivor, f"failover{index}/")
            await sequential_latencies_ms(putter.put, 5)

            async def kill(victim: str = leader) -> None:
                await mesh.kill_services(victim)

            figures.failover_s.append(await first_success_after_s(kill, putter.put_within))
        finally:
            await bus.close()
        await mesh.start_services([leader])
        await served_again(mesh, leader)


async def served_again(mesh: LocalMesh, node: str) -> None:
    """Wait until ``node``'s restarted consensus service acknowledges a put."""
    bus = await connect(mesh, node, name="bench-recover")
    putter = Putter(bus, node, "recover/")
    try:
        await eventually(lambda: putter.put_within(0, 2.0), within=RECOVER_WITHIN_S, every=0.2)
    finally:
        await bus.close()


async def measure_lab(
    run_dir: Path,
    size: int,
    backend: str,
    *,
    samples: int,
    writes: int,
    repeats: int,
    concurrencies: Sequence[int],
    failover_repeats: int = 0,
) -> LabFigures:
    """One lab of ``size`` hosts running the consensus service with ``backend``."""
    figures = LabFigures()
    async with consensus_lab(run_dir, node_names(size), backend, LOG_LEVEL="warning") as mesh:
        figures.entry_host = await entry_host(mesh, backend)
        bus = await connect(mesh, figures.entry_host, name="bench-client")
        try:
            await latency_and_throughput(
                bus,
                figures.entry_host,
                figures,
                samples=samples,
                writes=writes,
                repeats=repeats,
                concurrencies=concurrencies,
            )
        finally:
            await bus.close()
        await failovers(mesh, figures, failover_repeats)
    return figures


async def measure_failover(run_dir: Path, size: int, repeats: int, **env: str) -> LabFigures:
    """Failover alone, on a lab of ``size`` raft hosts whose services get ``env``."""
    figures = LabFigures()
    async with consensus_lab(run_dir, node_names(size), "raft", LOG_LEVEL="warning", **env) as mesh:
        await failovers(mesh, figures, repeats)
    return figures
