"""How long a mesh takes to agree on its membership, as tests and benchmarks measure it."""

from __future__ import annotations

from collections.abc import Sequence

from meshmind.bus.protocol import PeerChange
from tests.kit.recorder import Recorder


def sees_everyone(changes: Recorder[PeerChange], nodes: Sequence[str]) -> bool:
    """Whether every host has announced ``joined`` for every host."""
    seen: dict[str, set[str]] = {}
    for _, change in changes.events:
        if change.kind == "joined":
            seen.setdefault(change.observer, set()).add(change.node)
    return all(seen.get(n, set()) >= set(nodes) for n in nodes)


def convergence_lag_s(changes: Recorder[PeerChange], nodes: Sequence[str]) -> float:
    """Seconds from the start of the last discovery service to the moment every host has
    announced every other as joined.

    A service's start is the ``started_at`` it announces (taken when its discovery logic
    starts, once connected); the end is the latest observer's ``at`` of its first ``joined``
    for each host. Both are wall-clock times of processes on one machine.
    """
    first: dict[tuple[str, str], float] = {}
    started: dict[str, float] = {}
    for _, change in changes.events:
        if change.kind == "joined" and change.peer is not None:
            first.setdefault((change.observer, change.node), change.at)
            started[change.node] = change.peer.started_at
    end = max(first[(o, n)] for o in nodes for n in nodes)
    return end - max(started[n] for n in nodes)
