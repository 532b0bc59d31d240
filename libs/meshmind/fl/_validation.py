"""Checking a trainer's update before it may count: names, shapes, finite values, a norm bound."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from meshmind.fl._params import l2_norm, subtract


class UpdateRejected(ValueError):
    """An update that must not be aggregated; ``reason`` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def validate_update(
    global_params: Mapping[str, torch.Tensor],
    params: Mapping[str, torch.Tensor],
    max_update_norm: float,
) -> float:
    """Raise :class:`UpdateRejected` unless ``params`` is a sane update of ``global_params``.

    The update must carry exactly the global parameters' names, each with the same shape and a
    floating-point type, only finite values, and ``||params - global||_2 <= max_update_norm``.
    Returns that norm. ``max_update_norm`` may be ``math.inf`` (no bound).
    """
    if math.isnan(max_update_norm) or max_update_norm <= 0.0:
        raise ValueError("max_update_norm must be positive")
    missing = sorted(set(global_params) - set(params))
    if missing:
        raise UpdateRejected(f"missing parameters: {', '.join(missing)}")
    unexpected = sorted(set(params) - set(global_params))
    if unexpected:
        raise UpdateRejected(f"unexpected parameters: {', '.join(unexpected)}")
    for name, reference in global_params.items():
        tensor = params[name]
        if tensor.shape != reference.shape:
            raise UpdateRejected(
                f"{name}: shape {tuple(tensor.shape)}, expected {tuple(reference.shape)}"
            )
        if not tensor.is_floating_point():
            raise UpdateRejected(f"{name}: dtype {tensor.dtype} is not floating point")
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise UpdateRejected(f"{name}: {bad} non-finite values (NaN or infinity)")
    norm = l2_norm(subtract(params, global_params))
    if not norm <= max_update_norm:
        raise UpdateRejected(f"update norm {norm:.4g} exceeds the bound {max_update_norm:.4g}")
    return norm
