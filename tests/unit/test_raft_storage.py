"""Durable Raft storage: recovery, torn tails, corruption, suffix replacement, compaction, fsync."""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from meshmind.raft._storage import DiskStorage, StorageInUse
from meshmind.raft._types import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from meshmind.raft._wal import CorruptLog

CONF = ConfState(voters=frozenset({"n1", "n2", "n3"}), learners=frozenset({"n4"}))


def entries(first: int, last: int, term: int, tag: str = "") -> list[Entry]:
    return [
        Entry(term, index, EntryKind.NORMAL, f"{tag}{term}:{index}".encode())
        for index in range(first, last + 1)
    ]


def snapshot_at(index: int, term: int, data: bytes = b"state") -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, CONF), data)


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("wal-*.log"))


def reopen(directory: Path, **options: int) -> DiskStorage:
    return DiskStorage.open(directory, **options)


def test_a_fresh_directory_recovers_nothing(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path / "data" / "n1") as storage:
        assert storage.recovered.hard_state == HardState()
        assert storage.recovered.snapshot is None
        assert storage.recovered.entries == ()
        assert storage.torn is None


def test_round_trip(tmp_path: Path) -> None:
    batch = [
        Entry(1, 1, EntryKind.NOOP),
        Entry(1, 2, EntryKind.NORMAL, b"\x00\xffbinary"),
        Entry(1, 3, EntryKind.CONFIG, b"conf"),
    ]
    with DiskStorage.open(tmp_path) as storage:
        storage.save(HardState(term=1, vote="n2", commit=0), batch)
        storage.save(HardState(term=1, vote="n2", commit=3), [])
    with reopen(tmp_path) as storage:
        assert storage.recovered.hard_state == HardState(term=1, vote="n2", commit=3)
        assert storage.recovered.entries == tuple(batch)
        assert storage.last_index == 3


def test_a_directory_is_held_by_one_storage_at_a_time(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path), pytest.raises(StorageInUse):
        DiskStorage.open(tmp_path)
    DiskStorage.open(tmp_path).close()


def test_suffix_replacement_survives_restart(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as storage:
        storage.save(HardState(term=1), entries(1, 10, term=1))
        storage.save(HardState(term=2), entries(6, 8, term=2))  # a new leader overwrote 6..10
        storage.save(None, entries(9, 9, term=2))
    with reopen(tmp_path) as storage:
        expected = entries(1, 5, term=1) + entries(6, 9, term=2)
        assert storage.recovered.entries == tuple(expected)
        assert storage.recovered.hard_state.term == 2


def test_suffix_replacement_across_segments(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path, segment_bytes=200) as storage:
        for first in range(1, 40, 4):
            storage.save(None, entries(first, first + 3, term=1))
        assert storage.segments >= 3
        storage.save(HardState(term=3), entries(7, 9, term=3))
    with reopen(tmp_path, segment_bytes=200) as storage:
        assert storage.recovered.entries == tuple(entries(1, 6, term=1) + entries(7, 9, term=3))


def test_entries_may_not_leave_a_gap(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as storage:
        storage.save(None, entries(1, 3, term=1))
        with pytest.raises(ValueError, match="after the last durable index"):
            storage.save(None, entries(5, 6, term=1))
        with pytest.raises(ValueError, match="not contiguous"):
            storage.save(None, [Entry(1, 4), Entry(1, 6)])


# A reference model of what storage must recover, and random workloads against it.


@dataclass
class Model:
    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    log: list[Entry] = field(default_factory=list)

    @property
    def first(self) -> int:
        return (self.snapshot.meta.index if self.snapshot else 0) + 1

    @property
    def last(self) -> int:
        return self.first + len(self.log) - 1

    def term_at(self, index: int) -> int:
        if self.snapshot and index == self.snapshot.meta.index:
            return self.snapshot.meta.term
        return self.log[index - self.first].term

    def append(self, batch: list[Entry]) -> None:
        del self.log[batch[0].index - self.first :]
        self.log.extend(batch)

    def compact(self, snapshot: Snapshot) -> None:
        del self.log[: snapshot.meta.index + 1 - self.first]
        self.snapshot = snapshot


def random_workload(seed: int, directory: Path, steps: int, segment_bytes: int) -> None:
    rng = random.Random(seed)
    model = Model()
    term = 1
    storage = DiskStorage.open(directory, segment_bytes=segment_bytes)
    try:
        for step in range(steps):
            roll = rng.random()
            if roll < 0.6:
                start = rng.randint(max(model.first, model.last - 4), model.last + 1)
                if start <= model.last:
                    term += 1  # only a newer leader overwrites
                batch = entries(start, start + rng.randint(0, 5), term, tag=f"s{step}-")
                hard_state = HardState(
                    term, rng.choice([None, "n1", "n2"]), model.hard_state.commit
                )
                storage.save(hard_state, batch)
                model.append(batch)
                model.hard_state = hard_state
            elif roll < 0.75:
                hard_state = HardState(term, model.hard_state.vote, rng.randint(0, model.last))
                storage.save(hard_state, [])
                model.hard_state = hard_state
            elif roll < 0.85 and model.last >= model.first:
                index = rng.randint(model.first, model.last)
                snapshot = snapshot_at(index, model.term_at(index), f"upto{index}".encode())
                storage.compact(snapshot)
                model.compact(snapshot)
            else:
                storage.close()
                storage = DiskStorage.open(directory, segment_bytes=segment_bytes)
                recovered = storage.recovered
                assert recovered.hard_state == model.hard_state, f"seed {seed} step {step}"
                assert recovered.snapshot == model.snapshot, f"seed {seed} step {step}"
                assert list(recovered.entries) == model.log, f"seed {seed} step {step}"
                assert storage.torn is None
    finally:
        storage.close()
    with DiskStorage.open(directory, segment_bytes=segment_bytes) as storage:
        assert list(storage.recovered.entries) == model.log, f"seed {seed}"
        assert storage.recovered.snapshot == model.snapshot, f"seed {seed}"


@pytest.mark.parametrize("seed", range(30))
def test_restarts_after_many_batches_recover_exactly_what_was_saved(
    seed: int, tmp_path: Path
) -> None:
    random_workload(seed, tmp_path, steps=120, segment_bytes=512)


# Torn writes and corruption.


@pytest.fixture
def two_batches(tmp_path: Path) -> tuple[Path, int, int]:
    """A log whose final record is the second batch: (directory, its start, its end)."""
    source = tmp_path / "source"
    with DiskStorage.open(source) as storage:
        storage.save(HardState(term=1, vote="n1"), entries(1, 5, term=1))
        (segment,) = segment_files(source)
        start = segment.stat().st_size
        storage.save(None, entries(6, 8, term=1))
        end = segment.stat().st_size
    return source, start, end


def copy_of(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    (target / "LOCK").unlink()
    return target


def test_a_torn_final_record_is_cut_at_every_byte_offset(
    two_batches: tuple[Path, int, int], tmp_path: Path
) -> None:
    source, start, end = two_batches
    for cut in range(start, end):
        directory = copy_of(source, tmp_path / f"cut{cut}")
        (segment,) = segment_files(directory)
        os.truncate(segment, cut)
        with DiskStorage.open(directory) as storage:
            assert storage.recovered.entries == tuple(entries(1, 5, term=1)), f"cut at {cut}"
            assert storage.recovered.hard_state == HardState(term=1, vote="n1")
            if cut > start:
                assert storage.torn is not None
                assert (storage.torn.offset, storage.torn.dropped_bytes) == (start, cut - start)
            storage.save(None, entries(6, 6, term=2))  # and the log goes on from there
        assert segment.stat().st_size > start
        with DiskStorage.open(directory) as storage:
            assert storage.torn is None
            assert storage.recovered.entries[-1] == Entry(2, 6, EntryKind.NORMAL, b"2:6")
        shutil.rmtree(directory)


def test_a_final_record_zero_filled_by_the_filesystem_is_cut(
    two_batches: tuple[Path, int, int], tmp_path: Path
) -> None:
    source, start, end = two_batches
    for cut in range(start, end, 7):
        directory = copy_of(source, tmp_path / f"zero{cut}")
        (segment,) = segment_files(directory)
        with segment.open("r+b") as file:
            file.seek(cut)
            file.write(bytes(end - cut))
        with DiskStorage.open(directory) as storage:
            assert storage.recovered.entries == tuple(entries(1, 5, term=1))
            assert storage.torn is not None
        shutil.rmtree(directory)


def test_a_flipped_bit_in_the_final_record_is_a_torn_tail(
    two_batches: tuple[Path, int, int], tmp_path: Path
) -> None:
    source, _, end = two_batches
    directory = copy_of(source, tmp_path / "flipped")
    (segment,) = segment_files(directory)
    data = bytearray(segment.read_bytes())
    data[end - 3] ^= 0x10
    segment.write_bytes(bytes(data))
    with DiskStorage.open(directory) as storage:
        assert storage.recovered.entries == tuple(entries(1, 5, term=1))
        assert storage.torn is not None


def test_corruption_in_the_middle_of_the_log_is_refused(
    two_batches: tuple[Path, int, int], tmp_path: Path
) -> None:
    source, start, _ = two_batches
    for position in (0, 5, 9, start // 2, start - 1):
        directory = copy_of(source, tmp_path / f"mid{position}")
        (segment,) = segment_files(directory)
        data = bytearray(segment.read_bytes())
        data[position] ^= 0x01
        segment.write_bytes(bytes(data))
        with pytest.raises(CorruptLog, match="corrupt"):
            DiskStorage.open(directory)
        assert segment.read_bytes() == bytes(data)  # nothing was cut away


def test_a_damaged_older_segment_is_refused(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path, segment_bytes=100) as storage:
        for first in range(1, 30, 3):
            storage.save(HardState(term=1), entries(first, first + 2, term=1))
    segments = segment_files(tmp_path)
    assert len(segments) > 2
    with segments[1].open("r+b") as file:
        file.truncate(segments[1].stat().st_size - 1)
    with pytest.raises(CorruptLog, match="not the newest segment"):
        DiskStorage.open(tmp_path, segment_bytes=100)


def test_a_missing_segment_is_refused(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path, segment_bytes=100) as storage:
        for first in range(1, 30, 3):
            storage.save(HardState(term=1), entries(first, first + 2, term=1))
    segment_files(tmp_path)[1].unlink()
    with pytest.raises(CorruptLog, match="missing"):
        DiskStorage.open(tmp_path, segment_bytes=100)


# Snapshots and compaction.


def test_compaction_drops_covered_segments_and_survives_restart(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path, segment_bytes=300) as storage:
        for first in range(1, 101, 5):
            storage.save(
                HardState(term=2, vote="n3", commit=first + 4), entries(first, first + 4, 2)
            )
        before = segment_files(tmp_path)
        storage.compact(snapshot_at(60, 2, b"kv up to 60"))
        after = segment_files(tmp_path)
        assert len(after) < len(before)
        assert {path.name for path in after} <= {path.name for path in before} | {after[-1].name}
        assert storage.first_index == 61
        assert storage.last_index == 100
    with reopen(tmp_path, segment_bytes=300) as storage:
        recovered = storage.recovered
        assert recovered.snapshot == snapshot_at(60, 2, b"kv up to 60")
        assert recovered.entries == tuple(entries(61, 100, term=2))
        assert recovered.hard_state == HardState(term=2, vote="n3", commit=100)
        storage.save(None, entries(101, 101, term=2))
    assert [path.name for path in tmp_path.glob("*.snap")] == [
        "snap-0000000000000060-0000000000000002.snap"
    ]


def test_compaction_of_the_whole_log_reclaims_every_old_segment(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path, segment_bytes=300) as storage:
        for first in range(1, 51, 5):
            storage.save(HardState(term=1, commit=first + 4), entries(first, first + 4, 1))
        storage.compact(snapshot_at(20, 1))
        storage.compact(snapshot_at(50, 1, b"everything"))
        assert len(segment_files(tmp_path)) == 1
    with reopen(tmp_path) as storage:
        assert storage.recovered.snapshot == snapshot_at(50, 1, b"everything")
        assert storage.recovered.entries == ()
        assert storage.recovered.hard_state == HardState(term=1, commit=50)
        assert storage.last_index == 50
        storage.save(None, entries(51, 52, term=3))
    with reopen(tmp_path) as storage:
        assert storage.recovered.entries == tuple(entries(51, 52, term=3))


def test_compaction_must_match_the_log(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as storage:
        storage.save(None, entries(1, 5, term=1))
        with pytest.raises(ValueError, match="no entry 5 of term 2"):
            storage.compact(snapshot_at(5, 2))
        with pytest.raises(ValueError, match="no entry 9"):
            storage.compact(snapshot_at(9, 1))


def test_an_installed_snapshot_that_matches_keeps_the_entries_after_it(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as storage:
        storage.save(HardState(term=1), entries(1, 10, term=1))
        storage.save(HardState(term=1, commit=6), [], snapshot_at(6, 1, b"leader's"))
    with reopen(tmp_path) as storage:
        assert storage.recovered.snapshot == snapshot_at(6, 1, b"leader's")
        assert storage.recovered.entries == tuple(entries(7, 10, term=1))


def test_an_installed_snapshot_that_conflicts_replaces_the_whole_log(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as storage:
        storage.save(HardState(term=1), entries(1, 10, term=1))
        storage.save(HardState(term=3, commit=8), entries(9, 10, term=3), snapshot_at(8, 3))
    with reopen(tmp_path) as storage:
        assert storage.recovered.snapshot == snapshot_at(8, 3)
        assert storage.recovered.entries == tuple(entries(9, 10, term=3))
        assert storage.recovered.hard_state == HardState(term=3, commit=8)


def test_a_snapshot_file_without_its_log_marker_is_not_used(tmp_path: Path) -> None:
    """A crash after the snapshot file was renamed into place but before the log said so."""
    with DiskStorage.open(tmp_path) as storage:
        storage.save(HardState(term=1), entries(1, 10, term=1))
        storage.compact(snapshot_at(4, 1, b"old"))
    source = tmp_path / "snap-0000000000000004-0000000000000001.snap"
    orphan = tmp_path / "snap-0000000000000009-0000000000000001.snap"
    shutil.copy(source, orphan)
    with reopen(tmp_path) as storage:
        assert storage.recovered.snapshot == snapshot_at(4, 1, b"old")
        assert storage.recovered.entries == tuple(entries(5, 10, term=1))
    assert not orphan.exists()


def test_a_missing_snapshot_file_is_refused(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as storage:
        storage.save(HardState(term=1), entries(1, 10, term=1))
        storage.compact(snapshot_at(4, 1))
    next(tmp_path.glob("*.snap")).unlink()
    with pytest.raises(CorruptLog, match="missing"):
        DiskStorage.open(tmp_path)


# Durability: one fsync per batch.


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every ``os.fsync`` call's file descriptor, in order."""
    calls: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    return calls


def test_each_save_is_one_fsync(tmp_path: Path, fsyncs: list[int]) -> None:
    with DiskStorage.open(tmp_path, segment_bytes=1_000_000) as storage:
        fsyncs.clear()
        storage.save(HardState(term=1), entries(1, 3, term=1))
        assert len(fsyncs) == 2  # the new segment, then its directory entry
        for first in range(4, 200, 3):
            fsyncs.clear()
            storage.save(HardState(term=1, commit=first), entries(first, first + 2, term=1))
            assert len(fsyncs) == 1
        fsyncs.clear()
        storage.save(None, [])
        assert fsyncs == []  # nothing to make durable


def test_a_save_that_starts_a_segment_also_syncs_the_directory(
    tmp_path: Path, fsyncs: list[int]
) -> None:
    with DiskStorage.open(tmp_path, segment_bytes=200) as storage:
        counts = []
        for first in range(1, 60, 3):
            segments = storage.segments
            fsyncs.clear()
            storage.save(HardState(term=1), entries(first, first + 2, term=1))
            counts.append((storage.segments - segments, len(fsyncs)))
    assert set(counts) == {(0, 1), (1, 2)}


def test_a_batch_whose_fsync_fails_is_not_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with DiskStorage.open(tmp_path) as storage:
        storage.save(HardState(term=1), entries(1, 3, term=1))

        def failing_fsync(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fsync", failing_fsync)
        with pytest.raises(OSError, match="Input/output"):
            storage.save(HardState(term=2), entries(4, 4, term=2))
        assert storage.last_index == 3
        assert storage.hard_state == HardState(term=1)
        monkeypatch.undo()  # closing syncs what the failed fsync left behind


def test_a_commit_saved_unsynced_costs_no_fsync_and_is_durable_after_close(
    tmp_path: Path, fsyncs: list[int]
) -> None:
    with DiskStorage.open(tmp_path) as storage:
        storage.save(HardState(term=1, vote="n1"), entries(1, 3, term=1))
        fsyncs.clear()
        storage.save(HardState(term=1, vote="n1", commit=3), [], sync=False)
        assert fsyncs == []
        with pytest.raises(ValueError, match="synced"):
            storage.save(None, entries(4, 4, term=1), sync=False)
    assert len(fsyncs) == 1  # closing syncs what was written unsynced
    with DiskStorage.open(tmp_path) as reopened:
        assert reopened.recovered.hard_state == HardState(term=1, vote="n1", commit=3)
