"""The Raft driver over DiskStorage and StoreState: what it applied survives a restart."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshmind.consensus import (
    AppendDecision,
    Command,
    DriverSettings,
    LeaseGrant,
    Put,
    RaftDriver,
    Result,
    StoreState,
    encode_command,
)
from meshmind.raft import DiskStorage, NotLeader, StorageInUse

SETTINGS = DriverSettings(tick_s=0.01, election_ticks=3, snapshot_every=10)


async def _nowhere(peer: str, frames: list[bytes]) -> None:
    raise AssertionError(f"a group of one sends nothing, yet sent to {peer}")


@contextlib.asynccontextmanager
async def running(
    directory: Path, seed: int
) -> AsyncIterator[tuple[RaftDriver, StoreState, DiskStorage]]:
    """A one-voter group on ``directory``, its loop running; closed on exit."""
    state = StoreState()
    storage = DiskStorage.open(directory)
    driver = RaftDriver(
        "n1", frozenset({"n1"}), storage, state, _nowhere, SETTINGS, rng=random.Random(seed)
    )
    loop = asyncio.create_task(driver.run())
    try:
        yield driver, state, storage
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await driver.close()


async def propose(driver: RaftDriver, command: Command) -> Result:
    """``command``'s result, once this node leads and has applied it."""
    while True:
        try:
            result = await driver.propose(encode_command(command))
        except NotLeader:
            await asyncio.sleep(SETTINGS.tick_s)
            continue
        assert isinstance(result, Result)
        return result


@pytest.mark.parametrize("seed", range(3))
async def test_a_restarted_node_recovers_its_store_from_snapshot_and_log(
    tmp_path: Path, seed: int
) -> None:
    async with running(tmp_path, seed) as (driver, state, _):
        for i in range(25):  # past two snapshots: the log is compacted twice
            assert (await propose(driver, Put(f"k{i % 7}", f"v{i}".encode(), at=i))).ok
        await propose(driver, LeaseGrant("role", "n1", ttl=100, at=30))
        decision = (await propose(driver, AppendDecision(b"d", "once", at=31))).decision
        applied = driver.node.applied_index
        before = state.snapshot()

    async with running(tmp_path, seed) as (driver, state, storage):
        recovered = storage.recovered
        assert recovered.snapshot is not None
        compacted = recovered.snapshot.meta.index
        assert compacted >= 2 * SETTINGS.snapshot_every
        assert [entry.index for entry in recovered.entries] == list(
            range(compacted + 1, applied + 1)
        )
        with pytest.raises(StorageInUse):
            DiskStorage.open(tmp_path)
        await driver.wait_applied(applied)
        assert state.snapshot() == before
        retry = await propose(driver, AppendDecision(b"d", "once", at=40))
        assert (retry.decision, retry.duplicate) == (decision, True)
        held = await propose(driver, Put("role", b"x", at=41))
        assert not held.ok  # the recovered lease still holds its key


async def test_a_failing_applied_callback_neither_stops_the_loop_nor_applies_twice(
    tmp_path: Path,
) -> None:
    def fails(*_: object) -> None:
        raise KeyError("a callback bug")

    async with running(tmp_path, 0) as (driver, state, _):
        driver.on_applied = fails
        async with asyncio.timeout(10):
            for i in range(3):
                assert (await propose(driver, AppendDecision(b"d", f"k{i}", at=i))).ok
        assert [d.idempotency_key for d in state.decisions()] == ["k0", "k1", "k2"]
