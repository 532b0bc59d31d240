"""The links a monitor measures: which peers to probe next, and each link's scorer."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from meshmind.bus.protocol import LinkChange, LinkReport, LinkState
from meshmind.health._scoring import LinkEstimate, LinkScorer, ScoringConfig

_SEVERITY: dict[LinkState, int] = {"good": 0, "degraded": 1, "down": 2}


class ProbeRotation:
    """Round-robin over the peers, at most ``fanout`` per interval: each host's probing cost
    stays O(fanout) however large the mesh, and every peer is still probed in turn."""

    def __init__(self, fanout: int) -> None:
        if fanout < 1:
            raise ValueError("fanout must be at least 1")
        self.fanout = fanout
        self._queue: deque[str] = deque()

    def update(self, peers: Iterable[str]) -> None:
        """Follow the current peer set, keeping the rotation's order for peers that stay."""
        wanted = set(peers)
        kept = [p for p in self._queue if p in wanted]
        self._queue = deque(kept + sorted(wanted - set(kept)))

    def next_batch(self) -> list[str]:
        """The peers to probe this interval."""
        batch = [self._queue[i] for i in range(min(self.fanout, len(self._queue)))]
        self._queue.rotate(-len(batch))
        return batch


class LinkTable:
    """Every directed link from ``source``: a scorer per target, reports and changes."""

    def __init__(self, source: str, config: ScoringConfig | None = None) -> None:
        self.source = source
        self.config = config or ScoringConfig()
        self._scorers: dict[str, LinkScorer] = {}
        self._reported: dict[str, LinkEstimate] = {}
        self._reports: dict[str, LinkReport] = {}

    def record(self, target: str, rtt_ms: float | None, at: float) -> LinkChange | None:
        """A probe result; the change to announce when the link changed noticeably."""
        scorer = self._scorers.setdefault(target, LinkScorer(self.config))
        estimate = scorer.record(rtt_ms)
        report = self._report(target, estimate, at)
        self._reports[target] = report
        previous = self._reported.get(target)
        if not scorer.noticeable(previous, estimate):
            return None
        self._reported[target] = estimate
        return LinkChange(link=report, previous=previous.state if previous else None)

    def forget(self, target: str) -> None:
        """Stop tracking a link (its peer left long ago)."""
        for table in (self._scorers, self._reported, self._reports):
            table.pop(target, None)

    def reports(self) -> list[LinkReport]:
        """Every link's latest report, by target."""
        return [self._reports[t] for t in sorted(self._reports)]

    def targets(self) -> set[str]:
        """The targets being tracked."""
        return set(self._scorers)

    def worst_state(self) -> LinkState:
        """The worst state of any link (``good`` without links)."""
        states = [r.state for r in self._reports.values()]
        return max(states, key=_SEVERITY.__getitem__, default="good")

    def _report(self, target: str, estimate: LinkEstimate, at: float) -> LinkReport:
        return LinkReport(
            source=self.source,
            target=target,
            state=estimate.state,
            score=estimate.score,
            delivery=estimate.delivery,
            rtt_ms=estimate.rtt_ms,
            jitter_ms=estimate.jitter_ms,
            probes=estimate.probes,
            at=at,
        )
