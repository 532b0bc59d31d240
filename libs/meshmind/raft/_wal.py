"""The write-ahead log: checksummed records in size-capped segment files, one fsync per batch."""

from __future__ import annotations

import enum
import itertools
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
_HEADER = struct.Struct("<IIB")  # payload length, CRC-32 of type and payload, type
_SEGMENT_NAME = re.compile(r"^wal-(\d{16})\.log$")


class CorruptLog(Exception):
    """The log is damaged somewhere other than its final record: it cannot be trusted."""


class RecordType(enum.IntEnum):
    """What a record holds."""

    ENTRIES = 1
    HARD_STATE = 2
    SNAPSHOT = 3
    """A marker: the snapshot at (index, term) is in place from here on."""


@dataclass(frozen=True, slots=True)
class Record:
    """One framed record of the log."""

    type: RecordType
    payload: bytes


@dataclass(frozen=True, slots=True)
class TornTail:
    """A final record that never made it to disk whole, found and cut off on open."""

    segment: str
    offset: int
    dropped_bytes: int


def encode_record(record: Record) -> bytes:
    """Length, checksum, type, payload."""
    body = bytes([record.type]) + record.payload
    return _HEADER.pack(len(record.payload), zlib.crc32(body), record.type) + record.payload


def decode_records(data: bytes, name: str) -> tuple[list[Record], int]:
    """Every whole, valid record and the length they span.

    A damaged record whose extent reaches the end of ``data`` (or is followed only by zeros, as a
    file extended but never written shows) is a torn tail: decoding stops before it. A damaged
    record followed by anything else is corruption in the middle of the log.
    """
    records: list[Record] = []
    offset = 0
    while offset < len(data):
        problem = _record_problem(data, offset)
        if problem is not None:
            if _is_tail(data, offset):
                break
            raise CorruptLog(
                f"{name}: {problem} at byte {offset} of {len(data)}, with data after it; "
                "the log is corrupt and will not be replayed"
            )
        length, _, kind = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        records.append(Record(RecordType(kind), data[start : start + length]))
        offset = start + length
    return records, offset


def _record_problem(data: bytes, offset: int) -> str | None:
    if len(data) - offset < _HEADER.size:
        return "a short record header"
    length, checksum, kind = _HEADER.unpack_from(data, offset)
    start = offset + _HEADER.size
    if start + length > len(data):
        return "a short record"
    if zlib.crc32(data[start - 1 : start + length]) != checksum:
        return "a checksum mismatch"
    if kind not in RecordType._value2member_map_:
        return f"an unknown record type {kind}"
    return None


def _is_tail(data: bytes, offset: int) -> bool:
    """Whether a damaged record at ``offset`` is the last thing written."""
    if len(data) - offset < _HEADER.size:
        return True
    length, _, _ = _HEADER.unpack_from(data, offset)
    end = offset + _HEADER.size + length
    return end >= len(data) or not any(data[offset:])


def fsync_directory(directory: Path) -> None:
    """Make the directory's entries (files created, renamed, removed) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _segment_name(seq: int) -> str:
    return f"wal-{seq:016d}.log"


class WriteAheadLog:
    """Segments ``wal-<seq>.log`` in one directory; appends go to the newest.

    Each :meth:`append` writes its records with one ``write`` and makes them durable with one
    ``fsync`` (and one of the directory when it started a new segment).
    """

    def __init__(
        self, directory: Path, segment_bytes: int, segments: list[int], torn: TornTail | None
    ) -> None:
        self._directory = directory
        self._segment_bytes = segment_bytes
        self._segments = segments
        self._active: BinaryIO | None = None
        self._active_size = 0
        self._unsynced = False
        """Whether the active segment holds records written without a sync."""
        self.torn = torn
        """The torn final record cut off when the log was opened, if there was one."""
        self._replay: list[tuple[int, Record]] | None = []

    @classmethod
    def open(cls, directory: Path, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> WriteAheadLog:
        """Read and verify every segment, cutting off a torn final record."""
        seqs = sorted(
            int(match.group(1))
            for match in (_SEGMENT_NAME.match(path.name) for path in directory.iterdir())
            if match
        )
        for previous, current in itertools.pairwise(seqs):
            if current != previous + 1:
                raise CorruptLog(
                    f"{directory.name}: segment {_segment_name(previous + 1)} is missing"
                )
        replay: list[tuple[int, Record]] = []
        torn: TornTail | None = None
        for position, seq in enumerate(seqs):
            path = directory / _segment_name(seq)
            data = path.read_bytes()
            records, valid = decode_records(data, path.name)
            if valid < len(data):
                if position != len(seqs) - 1:
                    raise CorruptLog(
                        f"{path.name}: damaged at byte {valid} of {len(data)}, "
                        "but it is not the newest segment; the log is corrupt"
                    )
                torn = TornTail(path.name, valid, len(data) - valid)
                with path.open("r+b") as file:
                    file.truncate(valid)
                    file.flush()
                    os.fsync(file.fileno())
            replay.extend((seq, record) for record in records)
        wal = cls(directory, segment_bytes, seqs, torn)
        wal._replay = replay
        if seqs:
            wal._open_active(seqs[-1])
        return wal

    def replay(self) -> Iterator[tuple[int, Record]]:
        """The records read on open, oldest first, each with its segment; once only."""
        replay, self._replay = self._replay, None
        if replay is None:
            raise RuntimeError("the log has been replayed already")
        return iter(replay)

    @property
    def segments(self) -> list[int]:
        """Sequence numbers of the segments on disk, oldest first."""
        return list(self._segments)

    def append(
        self,
        records: Sequence[Record],
        header: Callable[[], Sequence[Record]],
        *,
        sync: bool = True,
    ) -> int:
        """Append records, durably unless ``sync`` is false (then they become durable with the
        next synced append, or at close); returns the segment they went to.

        When the newest segment is full, a new one is started with ``header()`` (the records that
        let it be replayed without the segments before it) ahead of ``records``, and synced.
        """
        created = self._active is None or self._active_size >= self._segment_bytes
        if created:
            self._start_segment()
            records = [*header(), *records]
        self._write(records, created=created, sync=sync or created)
        return self._segments[-1]

    def rotate(self, header: Sequence[Record]) -> int:
        """Start a new segment now, beginning with ``header``; returns its sequence number."""
        self._start_segment()
        self._write(header, created=True)
        return self._segments[-1]

    def remove(self, seqs: Sequence[int]) -> None:
        """Delete whole segments, oldest first; the newest one is never removed."""
        doomed = set(seqs)
        oldest = self._segments[: len(doomed)]
        if set(oldest) != doomed or (self._segments and self._segments[-1] in doomed):
            raise ValueError(f"only the oldest segments, not the newest, can go: {sorted(seqs)}")
        for seq in oldest:
            (self._directory / _segment_name(seq)).unlink()
        del self._segments[: len(doomed)]
        if doomed:
            fsync_directory(self._directory)

    def close(self) -> None:
        """Sync and close the active segment."""
        if self._active is not None:
            self._sync_unsynced()
            self._active.close()
            self._active = None

    def _write(self, records: Sequence[Record], *, created: bool, sync: bool = True) -> None:
        data = b"".join(encode_record(record) for record in records)
        active = self._active
        assert active is not None
        active.write(data)
        active.flush()
        self._unsynced = True
        if sync:
            os.fsync(active.fileno())
            self._unsynced = False
        self._active_size += len(data)
        if created:
            fsync_directory(self._directory)

    def _sync_unsynced(self) -> None:
        if self._unsynced and self._active is not None:
            os.fsync(self._active.fileno())
            self._unsynced = False

    def _start_segment(self) -> None:
        seq = self._segments[-1] + 1 if self._segments else 1
        if self._active is not None:
            self._sync_unsynced()
            self._active.close()
        self._segments.append(seq)
        self._open_active(seq)

    def _open_active(self, seq: int) -> None:
        path = self._directory / _segment_name(seq)
        self._active = path.open("ab")
        self._active_size = self._active.tell()
