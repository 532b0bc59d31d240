"""Choosing a round's trainers: able to train, lightly loaded, behind good links."""

from __future__ import annotations

import statistics
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from meshmind.bus.protocol import FL_EXCLUDED_PREFIX

UNREACHABLE = 0.05
"""A host whose links score below this is not asked to train: its update would not arrive."""
LOAD_PENALTY = 0.5
"""How much a fully busy CPU costs a candidate, against a perfect link's 1."""


@dataclass(frozen=True)
class Candidate:
    """A host that can train, and how busy its CPU is (percent)."""

    node: str
    cpu_pct: float = 0.0


@dataclass(frozen=True)
class MeasuredLink:
    """One directed link's score, as its source's monitor measures it."""

    source: str
    target: str
    score: float


def host_link_quality(links: Iterable[MeasuredLink], node: str) -> float | None:
    """The median score of the links other hosts measure towards ``node``; ``None`` if none.

    Every probe crosses the host's own link to the hub, so a bad link of ``node`` lowers all
    of these, while one other host's bad link moves the median little.
    """
    scores = [link.score for link in links if link.target == node and link.source != node]
    return statistics.median(scores) if scores else None


def link_qualities(links: Iterable[MeasuredLink], nodes: Iterable[str]) -> dict[str, float]:
    """Each node's link quality; 1.0 for a node nobody has measured yet."""
    measured = list(links)
    qualities = {}
    for node in nodes:
        quality = host_link_quality(measured, node)
        qualities[node] = 1.0 if quality is None else quality
    return qualities


def exclusion_key(node: str) -> str:
    """The consensus key that keeps ``node`` out of training while it has a value."""
    return f"{FL_EXCLUDED_PREFIX}{node}"


def select_trainers(
    candidates: Sequence[Candidate],
    count: int,
    quality: Mapping[str, float],
    excluded: Collection[str] = (),
) -> list[str]:
    """Up to ``count`` candidates, best first: link quality minus a load penalty, ties by id.

    Hosts whose links score below :data:`UNREACHABLE` are left out, and so are the hosts in
    ``excluded`` (those the consensus store excludes from training, :func:`exclusion_key`).
    """
    if count < 1:
        raise ValueError("count must be >= 1")

    def merit(candidate: Candidate) -> tuple[float, str]:
        link = quality.get(candidate.node, 1.0)
        load = min(max(candidate.cpu_pct, 0.0), 100.0) / 100.0
        return (-(link - LOAD_PENALTY * load), candidate.node)

    usable = [
        c for c in candidates if quality.get(c.node, 1.0) >= UNREACHABLE and c.node not in excluded
    ]
    return [c.node for c in sorted(usable, key=merit)[:count]]
