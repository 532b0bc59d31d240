"""Concurrent clients on a 5-host lab, hosts killed and links cut: every history linearizable,
batched writes included."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshmind.bus import Bus, BusError
from meshmind.bus.protocol import (
    CONSENSUS_BATCH,
    CONSENSUS_CAS,
    CONSENSUS_GET,
    CONSENSUS_PUT,
    KvBatch,
    KvBatchWrite,
    KvCas,
    KvKey,
    KvPut,
)
from meshmind.lab import LocalMesh, node_names
from tests.kit.consensus import ask, connect, consensus_lab, wait_for_leader
from tests.kit.linearizability import Operation, OperationKind, check

NODES = node_names(5)
KEYS = ("x", "y", "z")
RUN_S = 35.0
CLIENTS = 6


async def _client(
    client: int, bus: Bus, rng: random.Random, stop: asyncio.Event, history: list[Operation]
) -> None:
    loop = asyncio.get_running_loop()
    values = itertools.count()
    while not stop.is_set():
        key = rng.choice(KEYS)
        kind: OperationKind = rng.choice(("get", "get", "put", "cas"))
        value = f"{client}-{next(values)}"
        expected = f"{rng.randrange(CLIENTS)}-{rng.randrange(5)}" if rng.random() < 0.7 else None
        call = loop.time()
        if rng.random() < 0.15:
            await _batch(client, bus, rng, values, history)
            continue
        try:
            if kind == "get":
                reply = await ask(bus, CONSENSUS_GET, KvKey(key=key), timeout=4)
                history.append(Operation(client, call, loop.time(), "get", key, output=reply.value))
            elif kind == "put":
                await ask(bus, CONSENSUS_PUT, KvPut(key=key, value=value), timeout=4)
                history.append(Operation(client, call, loop.time(), "put", key, value))
            else:
                cas = KvCas(key=key, expected=expected, value=value)
                done = await ask(bus, CONSENSUS_CAS, cas, timeout=4)
                history.append(
                    Operation(client, call, loop.time(), "cas", key, value, expected, done.ok)
                )
        except BusError:
            if kind != "get":  # it may or may not have taken effect
                history.append(
                    Operation(
                        client, call, None, kind, key, value, expected if kind == "cas" else None
                    )
                )
            await asyncio.sleep(0.1)


async def _batch(
    client: int,
    bus: Bus,
    rng: random.Random,
    values: Iterator[int],
    history: list[Operation],
) -> None:
    """Two or three puts and cases in one batch request: each is an operation of its own over
    the request's whole span (writes to one key apply in order, which the check allows)."""
    loop = asyncio.get_running_loop()
    writes = [
        KvBatchWrite(
            op=rng.choice(("put", "cas")),
            key=rng.choice(KEYS),
            value=f"{client}-{next(values)}",
        )
        for _ in range(rng.randint(2, 3))
    ]
    writes = [
        write.model_copy(update={"expected": f"{rng.randrange(CLIENTS)}-{rng.randrange(5)}"})
        if write.op == "cas" and rng.random() < 0.7
        else write
        for write in writes
    ]
    call = loop.time()
    try:
        done = await ask(bus, CONSENSUS_BATCH, KvBatch(writes=writes), timeout=4)
    except BusError:
        for write in writes:
            history.append(
                Operation(client, call, None, write.op, write.key, write.value, write.expected)
            )
        await asyncio.sleep(0.1)
        return
    ret = loop.time()
    for write, outcome in zip(writes, done.writes, strict=True):
        ok = outcome.ok if write.op == "cas" else None
        history.append(
            Operation(client, call, ret, write.op, write.key, write.value, write.expected, ok)
        )


async def _faults(mesh: LocalMesh, rng: random.Random, stop: asyncio.Event) -> None:
    while not stop.is_set():
        victim = rng.choice(NODES)
        fault = rng.choice(("kill", "loud", "silent"))
        if fault == "kill":
            await mesh.kill(victim)
            await asyncio.sleep(rng.uniform(2, 5))
            await mesh.restart(victim)
        else:
            await mesh.host(victim).link.cut("loud" if fault == "loud" else "silent")
            await asyncio.sleep(rng.uniform(2, 8))
            mesh.host(victim).link.restore()
        await asyncio.sleep(rng.uniform(1, 3))


@pytest.mark.timeout(420)
@pytest.mark.parametrize("backend", ["raft", "jetstream"])
async def test_histories_under_kills_and_cuts_are_linearizable(
    tmp_path: Path, backend: str
) -> None:
    seed = 1234
    rng = random.Random(seed)
    history: list[Operation] = []
    async with consensus_lab(tmp_path / "lab", NODES, backend) as mesh:
        buses = [await connect(mesh, NODES[i % len(NODES)], f"client{i}") for i in range(CLIENTS)]
        try:
            await wait_for_leader(buses[0])
            stop = asyncio.Event()
            tasks = [
                asyncio.create_task(_client(i, bus, random.Random(seed + i), stop, history))
                for i, bus in enumerate(buses)
            ]
            faults = asyncio.create_task(_faults(mesh, rng, stop))
            await asyncio.sleep(RUN_S)
            stop.set()
            await asyncio.gather(*tasks, faults)
        finally:
            for bus in buses:
                await bus.close()
    done = [op for op in history if op.ret is not None]
    assert len(done) > 50, f"too few completed operations: {len(done)}"
    assert any(op.kind != "get" for op in done)
    result = check(history)
    assert result.ok, f"seed {seed}: not linearizable on {result.key}: {result.history}"
