"""Placing work: the least-loaded peer able to do it."""

from __future__ import annotations

from collections.abc import Iterable

from meshmind.bus.protocol import PeerInfo

QUEUE_WEIGHT = 2.0
"""Percentage points of load one queued message counts for."""


def load_score(peer: PeerInfo) -> float:
    """How busy a peer is: its busier resource, plus its queued work."""
    load = peer.load
    return max(load.cpu_pct, load.mem_pct) + QUEUE_WEIGHT * sum(load.queues.values())


def least_loaded(peers: Iterable[PeerInfo], capability: str | None = None) -> PeerInfo | None:
    """The least-loaded peer with ``capability`` (ties go to the smaller node id)."""
    able = [p for p in peers if capability is None or capability in p.capabilities]
    return min(able, key=lambda p: (load_score(p), p.node), default=None)
