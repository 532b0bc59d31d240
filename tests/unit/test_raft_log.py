"""The Raft log and the leader's per-follower progress: conflicts, hints, batches, windows."""

from __future__ import annotations

from collections import deque

import pytest

from meshmind.raft import ConfState, Entry, EntryKind, Progress, ProgressState, Snapshot
from meshmind.raft._log import LogSafetyError, RaftLog
from meshmind.raft._types import SnapshotMeta


def log_of(terms: list[int], commit: int = 0, snapshot: Snapshot | None = None) -> RaftLog:
    start = snapshot.meta.index if snapshot else 0
    entries = [Entry(term, start + i, EntryKind.NORMAL, b"") for i, term in enumerate(terms, 1)]
    return RaftLog(snapshot, entries, commit)


def terms_of(log: RaftLog) -> list[int]:
    return [entry.term for entry in log.entries]


def test_an_append_that_matches_keeps_the_log_and_raises_the_commit() -> None:
    log = log_of([1, 1, 2])
    assert log.maybe_append(1, 1, 5, [Entry(1, 2), Entry(2, 3)]) == (3, False)
    assert terms_of(log) == [1, 1, 2]
    assert log.committed == 3  # capped at what this append vouches for


def test_an_append_that_conflicts_replaces_the_suffix_from_the_conflict() -> None:
    log = log_of([1, 1, 2, 2, 2])
    log.stable_to(5, 2)
    assert log.maybe_append(2, 1, 0, [Entry(3, 3), Entry(3, 4)]) == (4, False)
    assert terms_of(log) == [1, 1, 3, 3]
    assert log.stable == 2
    assert [e.index for e in log.unstable_entries()] == [3, 4]


def test_an_append_after_a_missing_or_different_entry_is_refused() -> None:
    log = log_of([1, 2])
    assert log.maybe_append(3, 2, 0, [Entry(2, 4)]) is None
    assert log.maybe_append(2, 1, 0, [Entry(2, 3)]) is None
    assert terms_of(log) == [1, 2]


def test_committed_entries_are_never_overwritten() -> None:
    log = log_of([1, 1, 1], commit=2)
    with pytest.raises(LogSafetyError):
        log.maybe_append(1, 1, 0, [Entry(2, 2)])


@pytest.mark.parametrize(
    ("index", "term", "expected"),
    [
        (10, 6, (10, 6)),  # the entry there is old enough already
        (10, 5, (7, 5)),  # skip back over the whole of term 6
        (10, 3, (3, 1)),  # terms 4..6 skipped at once
        (5, 4, (5, 4)),
        (10, 0, (0, 0)),  # nothing has so low a term: down to the start
    ],
)
def test_the_conflict_hint_skips_whole_terms(
    index: int, term: int, expected: tuple[int, int]
) -> None:
    log = log_of([1, 1, 1, 4, 4, 5, 5, 6, 6, 6])
    assert log.find_conflict_by_term(index, term) == expected


def test_the_conflict_hint_stops_at_the_snapshot() -> None:
    snapshot = Snapshot(SnapshotMeta(5, 3, ConfState(frozenset({"n1"}))))
    log = log_of([4, 4], snapshot=snapshot)
    assert log.find_conflict_by_term(7, 2) == (4, 0)
    assert log.term_at(5) == 3
    assert log.term_at(4) is None


def test_a_batch_respects_the_entry_and_byte_limits_but_carries_at_least_one() -> None:
    log = RaftLog(None, [Entry(1, i, EntryKind.NORMAL, b"x" * 10) for i in range(1, 9)], 0)
    assert [e.index for e in log.batch_from(2, 3, 1000)] == [2, 3, 4]
    assert [e.index for e in log.batch_from(2, 64, 25)] == [2, 3]
    assert [e.index for e in log.batch_from(2, 64, 5)] == [2]
    assert log.batch_from(9, 64, 1000) == ()


def test_compaction_drops_applied_entries_and_keeps_indices() -> None:
    log = log_of([1, 1, 2, 2], commit=4)
    log.applied = 3
    snapshot = Snapshot(SnapshotMeta(3, 2, ConfState(frozenset({"n1"}))), b"state")
    log.compact(snapshot)
    assert log.offset == 3
    assert [e.index for e in log.entries] == [4]
    assert log.term_at(3) == 2
    with pytest.raises(ValueError, match="cannot compact"):
        log.compact(Snapshot(SnapshotMeta(4, 2)))  # 4 is not applied yet


def test_a_recovered_commit_beyond_the_torn_log_end_is_capped() -> None:
    assert log_of([1, 1], commit=5).committed == 2


def test_a_probing_follower_gets_one_append_at_a_time() -> None:
    progress = Progress(next=5, max_inflight=4)
    assert not progress.paused
    progress.sent(7)
    assert progress.paused
    assert progress.next == 5  # probing does not move next optimistically


def test_a_replicating_follower_gets_a_window_of_pipelined_appends() -> None:
    progress = Progress(next=1, max_inflight=2, state=ProgressState.REPLICATE)
    progress.sent(3)
    progress.sent(6)
    assert progress.next == 7
    assert progress.paused
    assert progress.maybe_update(3)
    progress.acknowledged(3)
    assert progress.inflight == deque([6])
    assert not progress.paused


def test_a_rejection_rewinds_next_using_the_hint_and_ignores_stale_ones() -> None:
    progress = Progress(next=11, max_inflight=4, match=2)
    assert not progress.maybe_decrease_to(7, 3)  # not the index we probed: stale
    assert progress.maybe_decrease_to(10, 3)
    assert progress.next == 4
    replicating = Progress(next=20, max_inflight=4, match=8, state=ProgressState.REPLICATE)
    assert not replicating.maybe_decrease_to(8, 0)  # at or below the match: stale
    assert replicating.maybe_decrease_to(15, 0)
    assert replicating.next == 9


def test_a_snapshot_in_flight_pauses_the_follower_until_it_is_acknowledged() -> None:
    progress = Progress(next=3, max_inflight=4, match=2)
    progress.become_snapshot(40)
    assert progress.paused
    progress.become_probe()
    assert progress.next == 41
