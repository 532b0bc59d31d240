"""How a Raft node is configured: its identity, initial membership, timing and flow limits."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RaftConfig:
    """A node's settings. ``voters``/``learners`` are the membership until the log says
    otherwise; ``rng`` is the only source of randomness (the election timeout)."""

    id: str
    voters: frozenset[str]
    rng: random.Random
    learners: frozenset[str] = field(default_factory=frozenset)
    election_tick: int = 10
    """Ticks without hearing a leader before campaigning (randomised up to twice this)."""
    heartbeat_tick: int = 1
    """Ticks between a leader's heartbeats."""
    max_append_entries: int = 64
    """Most entries in one append."""
    max_append_bytes: int = 1 << 20
    """Most entry bytes in one append (an append always carries at least one entry)."""
    max_inflight: int = 64
    """Most unacknowledged appends pipelined to one follower."""
    pre_vote: bool = True
    check_quorum: bool = True

    def __post_init__(self) -> None:
        if self.heartbeat_tick < 1 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 1 <= heartbeat_tick < election_tick")
        if self.max_append_entries < 1 or self.max_inflight < 1:
            raise ValueError("max_append_entries and max_inflight must be positive")
