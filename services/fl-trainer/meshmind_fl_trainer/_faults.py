"""Faulty updates for tests: what a broken or hostile host might send instead of its own."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch

from meshmind.fl import Params

SCALE = 100.0
"""How far a scaled update moves from the global adapter, against the honest one."""


def corrupt(
    params: Mapping[str, torch.Tensor],
    global_params: Mapping[str, torch.Tensor],
    fault: Literal["none", "nan", "scale"],
) -> Params:
    """``params`` poisoned: one NaN in every tensor (``nan``), or the change from the global
    adapter blown up :data:`SCALE` times (``scale``)."""
    if fault == "nan":
        poisoned = {name: tensor.clone() for name, tensor in params.items()}
        for tensor in poisoned.values():
            tensor.view(-1)[0] = math.nan
        return poisoned
    if fault == "scale":
        return {
            name: global_params[name] + SCALE * (tensor - global_params[name])
            for name, tensor in params.items()
        }
    return dict(params)
