"""How much one update counts: its examples, the quality of its host's link, its staleness."""

from __future__ import annotations

import math
from dataclasses import dataclass

from meshmind.fl._params import Params


@dataclass(frozen=True)
class Update:
    """One host's trained parameters and what weighs them.

    ``weight`` multiplies the example count (link quality, see :func:`link_factor`);
    ``staleness`` is how many global versions were published since the host's base model.
    """

    params: Params
    examples: int
    weight: float = 1.0
    staleness: int = 0

    def __post_init__(self) -> None:
        if self.examples < 0 or self.staleness < 0:
            raise ValueError("examples and staleness must be >= 0")
        if not (math.isfinite(self.weight) and self.weight >= 0.0):
            raise ValueError("weight must be finite and >= 0")


def staleness_discount(staleness: int) -> float:
    """``1 / sqrt(1 + s)``, FedBuff's (Nguyen et al. 2022) weight for ``s`` versions of age."""
    if staleness < 0:
        raise ValueError("staleness must be >= 0")
    return 1.0 / math.sqrt(1.0 + staleness)


def link_factor(link_quality: float, floor: float = 0.1) -> float:
    """A link-quality score in [0, 1] as a weight in [``floor``, 1].

    The floor keeps an update that did arrive over a poor link from being silenced entirely:
    its content is as valid as any other, the link only makes its host less dependable.
    """
    if not 0.0 <= floor <= 1.0:
        raise ValueError("floor must be in [0, 1]")
    quality = min(max(link_quality, 0.0), 1.0) if math.isfinite(link_quality) else 0.0
    return floor + (1.0 - floor) * quality


def aggregation_weight(update: Update) -> float:
    """examples x link weight x staleness discount: what an update counts for in a mean."""
    return update.examples * update.weight * staleness_discount(update.staleness)
