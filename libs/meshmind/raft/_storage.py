"""Durable Raft storage in a data directory: the write-ahead log, snapshot files, recovery."""

from __future__ import annotations

import fcntl
import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import msgpack

from meshmind.raft._types import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Recovered,
    Snapshot,
    SnapshotMeta,
)
from meshmind.raft._wal import (
    DEFAULT_SEGMENT_BYTES,
    CorruptLog,
    Record,
    RecordType,
    TornTail,
    WriteAheadLog,
    decode_records,
    encode_record,
    fsync_directory,
)

_LOCK_FILE = "LOCK"
_SNAPSHOT_SUFFIX = ".snap"


class StorageInUse(Exception):
    """Another storage object (in this process or another) has the data directory open."""


def _pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _unpack(payload: bytes) -> Any:
    return msgpack.unpackb(payload, raw=False, use_list=True)


def _entries_record(entries: Sequence[Entry]) -> Record:
    rows = [[entry.term, entry.index, int(entry.kind), entry.data] for entry in entries]
    return Record(RecordType.ENTRIES, _pack(rows))


def _decode_entries(payload: bytes) -> list[Entry]:
    return [
        Entry(term, index, EntryKind(kind), data) for term, index, kind, data in _unpack(payload)
    ]


def _hard_state_record(hard_state: HardState) -> Record:
    return Record(
        RecordType.HARD_STATE, _pack([hard_state.term, hard_state.vote, hard_state.commit])
    )


def _decode_hard_state(payload: bytes) -> HardState:
    term, vote, commit = _unpack(payload)
    return HardState(term, vote, commit)


def _marker_record(meta: SnapshotMeta, *, keeps_log: bool) -> Record:
    """The snapshot at ``meta`` is in place; ``keeps_log``: entries after it stay."""
    return Record(RecordType.SNAPSHOT, _pack([meta.index, meta.term, keeps_log]))


def _snapshot_name(index: int, term: int) -> str:
    return f"snap-{index:016d}-{term:016d}{_SNAPSHOT_SUFFIX}"


def _encode_snapshot(snapshot: Snapshot) -> bytes:
    meta = snapshot.meta
    payload = _pack(
        [
            meta.index,
            meta.term,
            sorted(meta.conf.voters),
            sorted(meta.conf.learners),
            snapshot.data,
        ]
    )
    return encode_record(Record(RecordType.SNAPSHOT, payload))


def _decode_snapshot(data: bytes, name: str) -> Snapshot:
    records, valid = decode_records(data, name)
    if valid != len(data) or len(records) != 1:
        raise CorruptLog(f"{name}: the snapshot file is damaged")
    index, term, voters, learners, state = _unpack(records[0].payload)
    conf = ConfState(frozenset(voters), frozenset(learners))
    return Snapshot(SnapshotMeta(index, term, conf), state)


class DiskStorage:
    """A host's Raft state on disk: hard state, log entries and the latest snapshot.

    ``save`` makes one batch durable with one fsync; :attr:`recovered` is what was on disk when
    the directory was opened. One object at a time may hold a directory (a lock file says so).
    """

    def __init__(self, directory: Path, wal: WriteAheadLog, lock: int) -> None:
        self._directory = directory
        self._wal = wal
        self._lock = lock
        self._hard_state = HardState()
        self._snapshot: SnapshotMeta | None = None
        self._first_index = 1
        self._terms: list[int] = []
        self._segment_high: dict[int, int] = {}
        self._recovered = Recovered()

    @classmethod
    def open(
        cls, directory: str | os.PathLike[str], *, segment_bytes: int = DEFAULT_SEGMENT_BYTES
    ) -> DiskStorage:
        """Open (creating if needed) a data directory and recover what it holds.

        Raises :class:`CorruptLog` when a record other than the final one is damaged, and
        :class:`StorageInUse` when the directory is open elsewhere.
        """
        path = Path(directory)
        if not path.is_dir():
            path.mkdir(parents=True)
            fsync_directory(path.parent)
        lock = os.open(path / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            raise StorageInUse(f"{path} is open in another storage object") from None
        try:
            wal = WriteAheadLog.open(path, segment_bytes)
            storage = cls(path, wal, lock)
            storage._recover()
        except BaseException:
            os.close(lock)
            raise
        return storage

    @property
    def recovered(self) -> Recovered:
        """The hard state, snapshot and entries found on disk at open."""
        return self._recovered

    @property
    def torn(self) -> TornTail | None:
        """The torn final record cut off at open, if there was one."""
        return self._wal.torn

    @property
    def hard_state(self) -> HardState:
        """The durable hard state."""
        return self._hard_state

    @property
    def first_index(self) -> int:
        """Index of the first entry kept (the one after the snapshot)."""
        return self._first_index

    @property
    def last_index(self) -> int:
        """Index of the last durable entry (the snapshot's when no entry follows it)."""
        return self._first_index + len(self._terms) - 1

    @property
    def segments(self) -> int:
        """How many segment files the log spans."""
        return len(self._wal.segments)

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
        *,
        sync: bool = True,
    ) -> None:
        """Make a batch durable with one fsync of the log.

        ``snapshot`` (installed from a leader) is written first: entries after its index stay
        only if the log holds its index with its term. ``entries`` follow: the first may sit at
        or below the last durable index, and then replaces the durable suffix from there on.
        Without ``sync`` only a hard state may be saved; it becomes durable with the next
        synced save (a crash before then recovers an earlier one).
        """
        if not sync and (entries or snapshot is not None):
            raise ValueError("entries and snapshots are saved synced")
        _check_contiguous(entries)
        records: list[Record] = []
        keeps_log = False
        if snapshot is not None:
            self._write_snapshot_file(snapshot)
            keeps_log = self._term_at(snapshot.meta.index) == snapshot.meta.term
            records.append(_marker_record(snapshot.meta, keeps_log=keeps_log))
        base = snapshot.meta.index if snapshot is not None else self._first_index - 1
        last_durable = self.last_index if snapshot is None or keeps_log else base
        kept = [entry for entry in entries if entry.index > base]
        if kept and kept[0].index > last_durable + 1:
            raise ValueError(
                f"entries start at {kept[0].index}, after the last durable index {last_durable}"
            )
        if kept:
            records.append(_entries_record(kept))
        if hard_state is not None:
            records.append(_hard_state_record(hard_state))
        if not records:
            return
        seq = self._wal.append(records, self._header, sync=sync)
        if snapshot is not None:
            self._install(snapshot.meta, keeps_log=keeps_log)
            self._remove_stale_snapshot_files()
        if kept:
            self._put_entries(kept)
            self._segment_high[seq] = max(self._segment_high.get(seq, 0), kept[-1].index)
        if hard_state is not None:
            self._hard_state = hard_state

    def compact(self, snapshot: Snapshot) -> None:
        """Persist a snapshot of applied state, drop the entries it covers, delete their files."""
        meta = snapshot.meta
        if self._snapshot is not None and meta.index <= self._snapshot.index:
            return
        if self._term_at(meta.index) != meta.term:
            raise ValueError(
                f"the log holds no entry {meta.index} of term {meta.term} to compact up to"
            )
        self._write_snapshot_file(snapshot)
        self._wal.append([_marker_record(meta, keeps_log=True)], self._header)
        self._install(meta, keeps_log=True)
        self._remove_stale_snapshot_files()
        segments = self._wal.segments
        if 0 < self._segment_high.get(segments[-1], 0) <= meta.index:
            self._wal.rotate(self._header())
            segments = self._wal.segments
        covered: list[int] = []
        for seq in segments[:-1]:
            if self._segment_high.get(seq, 0) > meta.index:
                break
            covered.append(seq)
        self._wal.remove(covered)
        for seq in covered:
            self._segment_high.pop(seq, None)

    def close(self) -> None:
        """Close the log and release the directory."""
        self._wal.close()
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def __enter__(self) -> DiskStorage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _header(self) -> list[Record]:
        """What a new segment starts with, so it replays without the segments before it."""
        header = [_hard_state_record(self._hard_state)]
        if self._snapshot is not None:
            header.append(_marker_record(self._snapshot, keeps_log=True))
        return header

    def _term_at(self, index: int) -> int | None:
        if self._snapshot is not None and index == self._snapshot.index:
            return self._snapshot.term
        offset = index - self._first_index
        return self._terms[offset] if 0 <= offset < len(self._terms) else None

    def _install(self, meta: SnapshotMeta, *, keeps_log: bool) -> None:
        if keeps_log:
            del self._terms[: max(0, meta.index + 1 - self._first_index)]
        else:
            self._terms.clear()
        self._snapshot = meta
        self._first_index = meta.index + 1

    def _put_entries(self, entries: Sequence[Entry]) -> None:
        del self._terms[entries[0].index - self._first_index :]
        self._terms.extend(entry.term for entry in entries)

    def _write_snapshot_file(self, snapshot: Snapshot) -> None:
        """Write to a temporary file, fsync, rename into place, fsync the directory."""
        name = _snapshot_name(snapshot.meta.index, snapshot.meta.term)
        temporary = self._directory / f"{name}.tmp"
        with temporary.open("wb") as file:
            file.write(_encode_snapshot(snapshot))
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(self._directory / name)
        fsync_directory(self._directory)

    def _remove_stale_snapshot_files(self) -> None:
        """Delete temporary files and snapshots other than the one the log refers to."""
        keep = _snapshot_name(self._snapshot.index, self._snapshot.term) if self._snapshot else ""
        for path in self._directory.iterdir():
            stale_snapshot = path.name.endswith(_SNAPSHOT_SUFFIX) and path.name != keep
            if stale_snapshot or path.name.endswith(".tmp"):
                path.unlink()

    def _recover(self) -> None:
        """Replay the log over the latest snapshot it refers to."""
        replay = list(self._wal.replay())
        markers = [record for _, record in replay if record.type is RecordType.SNAPSHOT]
        snapshot: Snapshot | None = None
        if markers:
            index, term, _ = _unpack(markers[-1].payload)
            snapshot = self._read_snapshot_file(index, term)
            self._snapshot = snapshot.meta
            self._first_index = index + 1
        base = self._first_index - 1
        log: list[Entry] = []
        for seq, record in replay:
            if record.type is RecordType.HARD_STATE:
                self._hard_state = _decode_hard_state(record.payload)
            elif record.type is RecordType.SNAPSHOT:
                if not _unpack(record.payload)[2]:
                    log.clear()
            else:
                entries = _decode_entries(record.payload)
                if not entries:
                    continue
                high = self._segment_high.get(seq, 0)
                self._segment_high[seq] = max(high, entries[-1].index)
                first = entries[0].index
                if first > base + len(log) + 1:
                    raise CorruptLog(
                        f"{self._directory.name}: entries jump from {base + len(log)} "
                        f"to {first}; the log is corrupt"
                    )
                # Written before a later snapshot, a batch still replaces what followed it.
                del log[max(first - base - 1, 0) :]
                log.extend(entry for entry in entries if entry.index > base)
        self._terms = [entry.term for entry in log]
        self._remove_stale_snapshot_files()
        self._recovered = Recovered(self._hard_state, snapshot, tuple(log))

    def _read_snapshot_file(self, index: int, term: int) -> Snapshot:
        path = self._directory / _snapshot_name(index, term)
        if not path.is_file():
            raise CorruptLog(f"the log refers to snapshot {path.name}, which is missing")
        snapshot = _decode_snapshot(path.read_bytes(), path.name)
        if (snapshot.meta.index, snapshot.meta.term) != (index, term):
            raise CorruptLog(f"{path.name} holds the snapshot of another index or term")
        return snapshot


def _check_contiguous(entries: Sequence[Entry]) -> None:
    for previous, entry in itertools.pairwise(entries):
        if entry.index != previous.index + 1:
            raise ValueError(f"entries are not contiguous: {previous.index} then {entry.index}")
