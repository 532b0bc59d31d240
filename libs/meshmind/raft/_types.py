"""The Raft vocabulary: log entries, persistent state, membership, snapshots."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class EntryKind(enum.IntEnum):
    """What a log entry carries."""

    NORMAL = 0
    """An application command (opaque bytes for the state machine)."""
    CONFIG = 1
    """A membership change: ``data`` is an encoded :class:`ConfState`."""
    NOOP = 2
    """The empty entry a new leader appends to commit entries of earlier terms."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry."""

    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What a node must persist before it answers: its term, its vote, its commit index."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership: voters and learners (non-voting members that receive the log)."""

    voters: frozenset[str] = field(default_factory=frozenset)
    learners: frozenset[str] = field(default_factory=frozenset)

    @property
    def members(self) -> frozenset[str]:
        """Voters and learners."""
        return self.voters | self.learners


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot sits in the log, and the membership as of that point."""

    index: int = 0
    term: int = 0
    conf: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine's state as of ``meta.index``; ``data`` is opaque to Raft."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Recovered:
    """What durable storage hands back on restart: persistent state, snapshot and log suffix."""

    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()
