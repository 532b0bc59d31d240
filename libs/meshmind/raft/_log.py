"""The in-memory Raft log: a snapshot point, the entries after it, commit and durability marks."""

from __future__ import annotations

from collections.abc import Sequence

from meshmind.raft._types import Entry, EntryKind, Snapshot


class LogSafetyError(AssertionError):
    """The log was asked to do what Raft's safety argument rules out (e.g. undo a commit)."""


class RaftLog:
    """Entries after the last snapshot, which of them are committed, applied and durable."""

    def __init__(self, snapshot: Snapshot | None, entries: Sequence[Entry], commit: int) -> None:
        self.snapshot = snapshot
        self.offset = snapshot.meta.index if snapshot else 0
        self.offset_term = snapshot.meta.term if snapshot else 0
        self.entries: list[Entry] = []
        for entry in entries:
            if entry.index <= self.offset:
                continue
            if entry.index != self.last_index + 1:
                raise ValueError(f"recovered log has a gap before index {entry.index}")
            self.entries.append(entry)
        self.committed = max(self.offset, min(commit, self.last_index))
        self.applied = self.offset
        self.applying = self.offset
        self.stable = self.last_index
        self.unstable_from = self.last_index + 1
        self.pending_snapshot: Snapshot | None = None
        self.config_indices = [e.index for e in self.entries if e.kind is EntryKind.CONFIG]

    @property
    def last_index(self) -> int:
        """The index of the last entry (the snapshot's if the log is empty)."""
        return self.offset + len(self.entries)

    @property
    def last_term(self) -> int:
        """The term of the last entry."""
        return self.entries[-1].term if self.entries else self.offset_term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; None if compacted away or beyond the end."""
        if index == self.offset:
            return self.offset_term
        if index < self.offset or index > self.last_index:
            return None
        return self.entries[index - self.offset - 1].term

    def entry_at(self, index: int) -> Entry:
        """The entry at ``index``, which must be in memory."""
        return self.entries[index - self.offset - 1]

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a log ending at ``last_index``/``last_term`` is at least as current as ours."""
        mine = self.last_term
        return last_term > mine or (last_term == mine and last_index >= self.last_index)

    def between(self, first: int, last: int) -> list[Entry]:
        """Entries ``first`` to ``last`` inclusive (all in memory)."""
        if first > last:
            return []
        return self.entries[first - self.offset - 1 : last - self.offset]

    def batch_from(self, first: int, max_entries: int, max_bytes: int) -> tuple[Entry, ...]:
        """Entries from ``first`` on, at most ``max_entries`` and, past the first, ``max_bytes``."""
        start = first - self.offset - 1
        batch = self.entries[start : start + max_entries]
        size = 0
        for count, entry in enumerate(batch):
            size += len(entry.data)
            if size > max_bytes and count > 0:
                return tuple(batch[:count])
        return tuple(batch)

    def append(self, entries: Sequence[Entry]) -> bool:
        """Append ``entries``, replacing any suffix from the first one's index on.

        Returns whether a membership entry was appended or removed."""
        first = entries[0].index
        if first <= self.committed:
            raise LogSafetyError(f"entry {first} would overwrite committed entry")
        config_changed = False
        if first <= self.last_index:
            del self.entries[first - self.offset - 1 :]
            self.stable = min(self.stable, first - 1)
            while self.config_indices and self.config_indices[-1] >= first:
                self.config_indices.pop()
                config_changed = True
        self.unstable_from = min(self.unstable_from, first)
        for entry in entries:
            self.entries.append(entry)
            if entry.kind is EntryKind.CONFIG:
                self.config_indices.append(entry.index)
                config_changed = True
        return config_changed

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """The index of the first of ``entries`` our log lacks or disagrees with; 0 if none."""
        for entry in entries:
            if self.term_at(entry.index) != entry.term:
                return entry.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The last index at or below ``index`` whose term is at most ``term``, and that term
        (0 if the search reaches compacted entries)."""
        while True:
            found = self.term_at(index)
            if found is None:
                return index, 0
            if found <= term:
                return index, found
            index -= 1

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]
    ) -> tuple[int, bool] | None:
        """A leader's append: None if our log does not match at ``prev_index``; else the last
        index it vouches for, and whether membership entries changed."""
        if self.term_at(prev_index) != prev_term:
            return None
        last_new = prev_index + len(entries)
        conflict = self.find_conflict(entries)
        config_changed = False
        if conflict:
            config_changed = self.append(entries[conflict - prev_index - 1 :])
        self.commit_to(min(commit, last_new))
        return last_new, config_changed

    def commit_to(self, index: int) -> bool:
        """Raise the commit index to ``index`` (never lowers it); whether it moved."""
        if index <= self.committed:
            return False
        if index > self.last_index:
            raise LogSafetyError(f"commit {index} beyond the last entry {self.last_index}")
        self.committed = index
        return True

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log with a snapshot received from the leader."""
        self.snapshot = snapshot
        self.pending_snapshot = snapshot
        self.offset = snapshot.meta.index
        self.offset_term = snapshot.meta.term
        self.entries = []
        self.config_indices = []
        self.committed = self.applied = self.applying = self.offset
        self.stable = self.offset
        self.unstable_from = self.offset + 1

    def compact(self, snapshot: Snapshot) -> None:
        """Drop the entries a locally taken snapshot covers."""
        index = snapshot.meta.index
        if not self.offset < index <= self.applied:
            raise ValueError(
                f"cannot compact to {index}: log starts after {self.offset}, "
                f"applied up to {self.applied}"
            )
        del self.entries[: index - self.offset]
        self.snapshot = snapshot
        self.offset = index
        self.offset_term = snapshot.meta.term
        self.config_indices = [i for i in self.config_indices if i > index]

    def unstable_entries(self) -> list[Entry]:
        """Entries not yet handed out to be persisted, marking them handed out."""
        fresh = self.between(self.unstable_from, self.last_index)
        self.unstable_from = self.last_index + 1
        return fresh

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``index`` (whose term was ``term``) are durable."""
        if self.term_at(index) == term and index > self.stable:
            self.stable = index

    def entries_to_apply(self) -> list[Entry]:
        """Committed entries not yet handed out to be applied, marking them handed out."""
        ready = self.between(max(self.applying, self.offset) + 1, self.committed)
        self.applying = self.committed
        return ready
