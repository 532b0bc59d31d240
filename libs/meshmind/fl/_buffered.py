"""Buffered asynchronous aggregation (FedBuff, Nguyen et al. 2022), weighted by link quality.

Trainers train from whichever global version they last received and send their parameters
when done. The buffer aggregates as soon as ``buffer_size`` contributions are in, so a trainer
behind a slow or stalled link never holds up a round: its contribution lands in a later one,
counted as a change from the version it started from and discounted for its staleness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from meshmind.fl._params import Params, add, subtract
from meshmind.fl._strategies import FedAvg, Strategy
from meshmind.fl._validation import UpdateRejected, validate_update
from meshmind.fl._weighting import Update, aggregation_weight, link_factor


@dataclass(frozen=True)
class Contribution:
    """A trainer's result: parameters trained from global version ``base_version``."""

    node: str
    params: Params
    examples: int
    base_version: int
    link_quality: float = 1.0
    """The health-monitor's score of the trainer's link, in [0, 1]."""


@dataclass(frozen=True)
class Aggregation:
    """A new global version and what went into it."""

    version: int
    params: Params
    nodes: tuple[str, ...]
    staleness: tuple[int, ...]
    weights: tuple[float, ...]
    """Each contribution's share of the mean (examples x link x staleness, normalised)."""


class FedBuff:
    """A buffer of ``buffer_size`` contributions applied to the global parameters when full.

    The next global is ``w + server_lr * (strategy(w, [w + d_k]) - w)`` where ``d_k`` is
    contribution ``k``'s change from its base version. Contributions older than
    ``max_staleness`` versions, or failing validation, are rejected with a reason.

    With ``remember``, the ``d_k`` are every host's latest change, not only the buffer's: a
    host behind a slow link keeps counting (discounted as it ages) in the versions made while
    its next update is on its way, as in MIFA (Gu et al. 2021). Without it, the versions made
    of fast hosts alone drift towards their data. A remembered change counts until it is
    ``max_staleness`` versions old.
    """

    def __init__(
        self,
        global_params: Params,
        *,
        buffer_size: int,
        max_staleness: int,
        strategy: Strategy | None = None,
        server_lr: float = 1.0,
        max_update_norm: float = math.inf,
        link_floor: float = 0.1,
        remember: bool = False,
    ) -> None:
        if buffer_size < 1 or max_staleness < 0 or not server_lr > 0.0:
            raise ValueError("need buffer_size >= 1, max_staleness >= 0 and server_lr > 0")
        self.buffer_size = buffer_size
        self.max_staleness = max_staleness
        self.strategy: Strategy = strategy if strategy is not None else FedAvg()
        self.server_lr = server_lr
        self.max_update_norm = max_update_norm
        self.link_floor = link_floor
        self.remember = remember
        self.version = 0
        self._history: dict[int, Params] = {0: dict(global_params)}
        self._pending: list[tuple[Contribution, Params]] = []
        self._latest: dict[str, tuple[Contribution, Params]] = {}
        """Each host's latest change, when remembered."""

    @property
    def params(self) -> Params:
        """The current global parameters."""
        return self._history[self.version]

    @property
    def pending(self) -> int:
        """Contributions waiting in the buffer."""
        return len(self._pending)

    def submit(self, contribution: Contribution) -> Aggregation | None:
        """Buffer a contribution; when the buffer fills, aggregate and return the new version.

        Raises :class:`UpdateRejected` for a contribution too stale, from an unknown version,
        or invalid against its base (see :func:`validate_update`).
        """
        staleness = self.version - contribution.base_version
        if staleness < 0:
            raise UpdateRejected(
                f"{contribution.node}: base version {contribution.base_version} is in the future"
            )
        if staleness > self.max_staleness:
            raise UpdateRejected(
                f"{contribution.node}: {staleness} versions stale, at most {self.max_staleness}"
            )
        base = self._history[contribution.base_version]
        validate_update(base, contribution.params, self.max_update_norm)
        self._pending.append((contribution, subtract(contribution.params, base)))
        if len(self._pending) < self.buffer_size:
            return None
        return self._aggregate()

    def _counted(self) -> list[tuple[Contribution, Params]]:
        """What the next version is made of: the buffer, or every host's latest change that
        is not yet ``max_staleness`` versions old (the buffer's among them)."""
        if not self.remember:
            return self._pending
        for contribution, delta in self._pending:
            self._latest[contribution.node] = (contribution, delta)
        for node, (contribution, _) in list(self._latest.items()):
            if self.version - contribution.base_version > self.max_staleness:
                del self._latest[node]
        return list(self._latest.values())

    def _aggregate(self) -> Aggregation:
        current = self.params
        counted = self._counted()
        updates = [
            Update(
                params=add(current, delta),
                examples=contribution.examples,
                weight=link_factor(contribution.link_quality, self.link_floor),
                staleness=self.version - contribution.base_version,
            )
            for contribution, delta in counted
        ]
        proposal = self.strategy.aggregate(current, updates)
        step = subtract(proposal, current)
        new_params = {
            name: current[name] + self.server_lr * step[name].to(current[name].dtype)
            for name in current
        }
        weights = [aggregation_weight(update) for update in updates]
        total = sum(weights) or 1.0
        self.version += 1
        self._history[self.version] = new_params
        for old in [v for v in self._history if v < self.version - self.max_staleness]:
            del self._history[old]
        result = Aggregation(
            version=self.version,
            params=new_params,
            nodes=tuple(contribution.node for contribution, _ in counted),
            staleness=tuple(update.staleness for update in updates),
            weights=tuple(w / total for w in weights),
        )
        self._pending = []
        return result
