"""The Raft driver over DiskStorage and StoreState: what it applied survives a restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
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
    StorageFailed,
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


async def test_a_large_state_is_snapshotted_again_only_once_as_much_was_logged(
    tmp_path: Path,
) -> None:
    big = b"x" * 4096
    async with running(tmp_path, 0) as (driver, _, _):
        for i in range(SETTINGS.snapshot_every):
            assert (await propose(driver, Put(f"big{i}", big, at=i))).ok
        first = driver.node.applied_index
        for i in range(5 * SETTINGS.snapshot_every):  # small entries: far fewer bytes
            assert (await propose(driver, Put("small", b"s", at=100 + i))).ok
    async with running(tmp_path, 0) as (_, _, storage):
        assert storage.recovered.snapshot is not None
        assert storage.recovered.snapshot.meta.index <= first  # none in the small ones


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


async def test_a_log_write_that_fails_stops_the_node_until_it_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = DiskStorage.open(tmp_path)
    driver = RaftDriver(
        "n1", frozenset({"n1"}), storage, StoreState(), _nowhere, SETTINGS, rng=random.Random(1)
    )
    loop = asyncio.create_task(driver.run())
    assert (await propose(driver, Put("kept", b"1", at=1))).ok

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)

    with pytest.raises(StorageFailed, match="Input/output error"):
        await propose(driver, Put("lost", b"2", at=2))
    with pytest.raises(StorageFailed):
        await loop  # the loop stops rather than run on with memory ahead of the disk
    with pytest.raises(StorageFailed):
        await driver.propose(encode_command(Put("refused", b"3", at=3)))
    with pytest.raises(StorageFailed):
        await driver.run()  # and a restarted loop stops at once
    monkeypatch.undo()
    await driver.close()

    async with running(tmp_path, seed=1) as (restarted, state, _):
        assert (await propose(restarted, Put("after", b"4", at=4))).ok
        assert state.get("kept") is not None  # ("lost" may or may not have reached the disk)


async def test_a_loop_woken_as_it_is_cancelled_stops(tmp_path: Path) -> None:
    """The loop waits for work with a timeout; a cancel that lands as work arrives must still
    stop it (``asyncio.wait_for`` on Python 3.11 returned the work and dropped the cancel,
    and a service's shutdown then hung until it was killed)."""
    state = StoreState()
    storage = DiskStorage.open(tmp_path)
    idle = DriverSettings(tick_s=60.0, election_ticks=3)  # no tick comes during the test
    driver = RaftDriver("n1", frozenset({"n1"}), storage, state, _nowhere, idle)
    loop = asyncio.create_task(driver.run())
    try:
        await asyncio.sleep(0.2)  # started, and waiting for work
        driver.forget_leader()  # wakes the loop ...
        loop.cancel()  # ... in the same step as the cancel
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(loop), 2)
    finally:
        loop.cancel()
        await driver.close()
