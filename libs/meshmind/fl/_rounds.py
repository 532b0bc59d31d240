"""One synchronous round's aggregation: validate each update, weigh it, combine, explain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from meshmind.fl._params import Params
from meshmind.fl._strategies import FedAdam, FedAvg, FedProx, Krum, Strategy, TrimmedMean
from meshmind.fl._validation import UpdateRejected, validate_update
from meshmind.fl._weighting import Update, aggregation_weight, link_factor

STRATEGIES = ("fedavg", "fedprox", "fedadam", "trimmed-mean", "krum")
KRUM_BYZANTINE = 1
KRUM_KEEP = 3


def make_strategy(name: str, proximal_mu: float = 0.01) -> Strategy:
    """The strategy called ``name`` (one of :data:`STRATEGIES`)."""
    if name == "fedavg":
        return FedAvg()
    if name == "fedprox":
        return FedProx(mu=proximal_mu)
    if name == "fedadam":
        return FedAdam()
    if name == "trimmed-mean":
        return TrimmedMean(beta=0.2)
    if name == "krum":
        return Krum(byzantine=KRUM_BYZANTINE, keep=KRUM_KEEP)
    raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")


def fitted(strategy: Strategy, count: int) -> Strategy:
    """``strategy`` as it can run on ``count`` updates: Krum tolerates fewer Byzantine hosts
    (and keeps fewer) when fewer updates arrived than it was configured for."""
    if isinstance(strategy, Krum) and count <= 2 * strategy.byzantine + 2:
        byzantine = max(0, (count - 3) // 2)
        return Krum(byzantine=byzantine, keep=max(1, min(strategy.keep, count - 2 * byzantine)))
    return strategy


@dataclass(frozen=True)
class Received:
    """A trainer's update as the coordinator received it."""

    node: str
    params: Params
    examples: int
    link_quality: float = 1.0


@dataclass(frozen=True)
class RoundOutcome:
    """The next global parameters and how each update counted."""

    params: Params
    weights: dict[str, float]
    """Each accepted update's share of the aggregate (0 for one a robust strategy left out)."""
    rejected: dict[str, str] = field(default_factory=dict)


def shares(strategy: Strategy, updates: Sequence[Update]) -> list[float]:
    """How much each update counts in ``strategy``'s aggregate, summing to 1."""
    if isinstance(strategy, Krum):
        scores = strategy.scores(updates)
        chosen = set(sorted(range(len(updates)), key=lambda i: scores[i])[: strategy.keep])
        return [1.0 / len(chosen) if i in chosen else 0.0 for i in range(len(updates))]
    if isinstance(strategy, TrimmedMean):
        return [1.0 / len(updates)] * len(updates)
    weights = [aggregation_weight(update) for update in updates]
    total = sum(weights) or 1.0
    return [w / total for w in weights]


def aggregate_round(
    strategy: Strategy,
    global_params: Params,
    received: Sequence[Received],
    *,
    link_weighting: bool,
    max_update_norm: float,
) -> RoundOutcome:
    """Validate every update against ``global_params``, weigh the valid ones (by examples,
    and by link quality when ``link_weighting``) and combine them. With none valid, the
    global parameters stay as they are and ``weights`` is empty."""
    rejected: dict[str, str] = {}
    nodes: list[str] = []
    updates: list[Update] = []
    for item in received:
        try:
            validate_update(global_params, item.params, max_update_norm)
        except UpdateRejected as rejection:
            rejected[item.node] = rejection.reason
            continue
        weight = link_factor(item.link_quality) if link_weighting else 1.0
        nodes.append(item.node)
        updates.append(Update(item.params, examples=max(item.examples, 1), weight=weight))
    if not updates:
        return RoundOutcome(dict(global_params), {}, rejected)
    used = fitted(strategy, len(updates))
    params = used.aggregate(global_params, updates)
    weights = dict(zip(nodes, shares(used, updates), strict=True))
    return RoundOutcome(params, weights, rejected)
