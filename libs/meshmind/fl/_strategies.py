"""Aggregation strategies: one interface: FedAvg, FedProx, FedAdam, trimmed mean and Krum.

The built-in tasks keep LoRA ``A`` frozen, so every coordinate a strategy sees (``B``, heads)
moves the model's weights linearly and robust statistics over them are statistics of the deltas.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch

from meshmind.fl._lora import aggregate_lora, lora_layers
from meshmind.fl._params import Params, flatten, weighted_mean
from meshmind.fl._weighting import Update, aggregation_weight


class Strategy(Protocol):
    """Turns the global parameters and the round's updates into the next global parameters."""

    name: str
    proximal_mu: float
    """The proximal coefficient trainers add to their local loss (0: none)."""

    def aggregate(self, global_params: Params, updates: Sequence[Update]) -> Params:
        """The next global parameters; ``updates`` must not be empty."""
        ...


def _weighted_average(updates: Sequence[Update]) -> Params:
    if not updates:
        raise ValueError("no updates to aggregate")
    weights = [aggregation_weight(update) for update in updates]
    if not sum(weights) > 0.0:
        raise ValueError("every update has zero weight")
    return aggregate_lora([update.params for update in updates], weights).params


class FedAvg:
    """McMahan et al. 2017: the mean of the updates weighted by examples (and link, staleness).

    LoRA factors are averaged exactly (:func:`aggregate_lora`): as ``B`` alone when ``A`` is
    frozen, as products factored again when hosts trained ``A`` too.
    """

    name = "fedavg"
    proximal_mu = 0.0

    def aggregate(self, global_params: Params, updates: Sequence[Update]) -> Params:
        return _weighted_average(updates)


class FedProx(FedAvg):
    """Li et al. 2020: FedAvg's aggregation; trainers add ``mu/2 * ||w - w_global||^2`` locally."""

    name = "fedprox"

    def __init__(self, mu: float = 0.01) -> None:
        if not mu > 0.0:
            raise ValueError("FedProx needs mu > 0")
        self.proximal_mu = mu


class FedAdam:
    """Reddi et al. 2021 (Adaptive Federated Optimization): Adam on the server.

    The pseudo-gradient is ``FedAvg(updates) - global``; the first and second moments persist
    across rounds; ``tau`` bounds the adaptivity. As in the paper, without bias correction.
    Meant for frozen-``A`` adapters: re-factored ``A`` would change basis under the moments.
    """

    name = "fedadam"
    proximal_mu = 0.0

    def __init__(
        self, lr: float = 1e-2, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3
    ) -> None:
        if not (lr > 0.0 and 0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0 and tau > 0.0):
            raise ValueError("need lr > 0, beta1 and beta2 in [0, 1), tau > 0")
        self.lr, self.beta1, self.beta2, self.tau = lr, beta1, beta2, tau
        self._m: Params = {}
        self._v: Params = {}

    def aggregate(self, global_params: Params, updates: Sequence[Update]) -> Params:
        average = _weighted_average(updates)
        result: Params = {}
        for name, current in global_params.items():
            delta = average[name].double() - current.double()
            m = self._m.get(name, torch.zeros_like(delta))
            v = self._v.get(name, torch.zeros_like(delta))
            m = self.beta1 * m + (1.0 - self.beta1) * delta
            v = self.beta2 * v + (1.0 - self.beta2) * delta * delta
            self._m[name], self._v[name] = m, v
            step = self.lr * m / (v.sqrt() + self.tau)
            result[name] = (current.double() + step).to(current.dtype)
        return result


class TrimmedMean:
    """Yin et al. 2018: per coordinate, drop the ``beta`` share of largest and smallest values.

    Unweighted, as robust estimators are: a weight would let one host buy its way back in.
    Coordinates of LoRA ``B`` are coordinates of the delta only while ``A`` is frozen, so
    updates whose ``A`` factors differ are refused.
    """

    name = "trimmed-mean"
    proximal_mu = 0.0

    def __init__(self, beta: float = 0.2) -> None:
        if not 0.0 <= beta < 0.5:
            raise ValueError("beta must be in [0, 0.5)")
        self.beta = beta

    def aggregate(self, global_params: Params, updates: Sequence[Update]) -> Params:
        if not updates:
            raise ValueError("no updates to aggregate")
        for layer, (a_name, _) in lora_layers(updates[0].params).items():
            first = updates[0].params[a_name]
            if not all(torch.equal(update.params[a_name], first) for update in updates):
                raise ValueError(f"trimmed mean needs LoRA A frozen; {layer} has differing A")
        trim = math.floor(self.beta * len(updates))
        result: Params = {}
        for name, reference in updates[0].params.items():
            stacked = torch.stack([update.params[name].double() for update in updates])
            kept = stacked.sort(dim=0).values[trim : len(updates) - trim]
            result[name] = kept.mean(dim=0).to(reference.dtype)
        return result


class Krum:
    """Blanchard et al. 2017: keep the updates closest to their ``n - f - 2`` nearest neighbours.

    Tolerates ``f`` Byzantine updates among ``n > 2f + 2``. With ``keep = 1`` this is Krum (the
    one best update); with ``keep = m > 1`` Multi-Krum, the plain mean of the ``m`` best.
    """

    name = "krum"
    proximal_mu = 0.0

    def __init__(self, byzantine: int = 1, keep: int = 1) -> None:
        if byzantine < 0 or keep < 1:
            raise ValueError("need byzantine >= 0 and keep >= 1")
        self.byzantine = byzantine
        self.keep = keep

    def scores(self, updates: Sequence[Update]) -> list[float]:
        """Each update's Krum score: summed squared distances to its closest neighbours."""
        n = len(updates)
        if n <= 2 * self.byzantine + 2:
            limit = 2 * self.byzantine + 2
            raise ValueError(f"Krum with f={self.byzantine} needs more than {limit} updates")
        names = sorted(updates[0].params)
        vectors = torch.stack([flatten(update.params, names) for update in updates])
        distances = torch.cdist(vectors, vectors).pow(2)
        neighbours = n - self.byzantine - 2
        return [
            float(torch.cat([row[:i], row[i + 1 :]]).sort().values[:neighbours].sum())
            for i, row in enumerate(distances)
        ]

    def aggregate(self, global_params: Params, updates: Sequence[Update]) -> Params:
        scores = self.scores(updates)
        best = sorted(range(len(updates)), key=lambda i: scores[i])[: self.keep]
        chosen = [updates[i] for i in best]
        if len(chosen) == 1:
            return {name: tensor.clone() for name, tensor in chosen[0].params.items()}
        return weighted_mean([update.params for update in chosen], [1.0] * len(chosen))
