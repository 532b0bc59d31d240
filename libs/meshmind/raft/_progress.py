"""What a leader knows of one follower's log, and how it paces appends to it."""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field


class ProgressState(enum.Enum):
    """How the leader is sending to a follower."""

    PROBE = "probe"
    """Looking for where the logs match: one append per response or heartbeat."""
    REPLICATE = "replicate"
    """Logs match: appends are pipelined, up to a window of unacknowledged ones."""
    SNAPSHOT = "snapshot"
    """A snapshot is on its way: nothing else is sent until it is acknowledged or given up."""


@dataclass(slots=True)
class Progress:
    """One follower's replication state, as etcd's ``tracker.Progress``."""

    next: int
    max_inflight: int
    match: int = 0
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    pending_snapshot: int = 0
    snapshot_ticks: int = 0
    recent_active: bool = True
    inflight: deque[int] = field(default_factory=deque)

    def become_probe(self) -> None:
        """Fall back to probing from just past what is known to match."""
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self._reset(ProgressState.PROBE)

    def become_replicate(self) -> None:
        """Start pipelining from just past the match."""
        self.next = self.match + 1
        self._reset(ProgressState.REPLICATE)

    def become_snapshot(self, index: int) -> None:
        """A snapshot up to ``index`` has been sent."""
        self._reset(ProgressState.SNAPSHOT)
        self.pending_snapshot = index

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        self.inflight.clear()

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged its log up to ``index``; False if that is old news."""
        self.next = max(self.next, index + 1)
        if index <= self.match:
            return False
        self.match = index
        self.probe_sent = False
        return True

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected an append after ``rejected``; False if the rejection is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def sent(self, last_index: int) -> None:
        """An append carrying entries up to ``last_index`` went out."""
        if self.state is ProgressState.REPLICATE:
            self.inflight.append(last_index)
            self.next = last_index + 1
        else:
            self.probe_sent = True

    def acknowledged(self, index: int) -> None:
        """Appends up to ``index`` are no longer in flight."""
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()

    @property
    def paused(self) -> bool:
        """Whether the leader must hold further appends to this follower for now."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflight) >= self.max_inflight
        return True
