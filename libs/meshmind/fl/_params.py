"""Model parameters as named tensors: the trainable state of a model and arithmetic on it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

import torch
from torch import nn

Params: TypeAlias = dict[str, torch.Tensor]
"""Parameter name -> tensor; the unit that trainers send and strategies aggregate."""


def trainable_params(model: nn.Module) -> Params:
    """A detached copy of the parameters that training changes (LoRA factors, heads)."""
    return {
        name: parameter.detach().clone()
        for name, parameter in model.named_parameters()
        if parameter.requires_grad
    }


def load_trainable(model: nn.Module, params: Mapping[str, torch.Tensor]) -> None:
    """Copy ``params`` into the model's trainable parameters; the names must match exactly."""
    own = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(own) != set(params):
        missing = sorted(set(own) - set(params))
        extra = sorted(set(params) - set(own))
        raise KeyError(f"parameter names differ: missing {missing}, unexpected {extra}")
    with torch.no_grad():
        for name, parameter in own.items():
            parameter.copy_(params[name])


def subtract(left: Mapping[str, torch.Tensor], right: Mapping[str, torch.Tensor]) -> Params:
    """``left - right`` name by name."""
    return {name: left[name] - right[name] for name in left}


def add(left: Mapping[str, torch.Tensor], right: Mapping[str, torch.Tensor]) -> Params:
    """``left + right`` name by name."""
    return {name: left[name] + right[name] for name in left}


def l2_norm(params: Mapping[str, torch.Tensor]) -> float:
    """The L2 norm of all tensors taken together as one vector."""
    total = sum(float(t.double().pow(2).sum()) for t in params.values())
    return float(total**0.5)


def flatten(params: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """The tensors named, in that order, as one float64 vector."""
    return torch.cat([params[name].reshape(-1).double() for name in names])


def weighted_mean(
    samples: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
) -> Params:
    """``sum(w_k * p_k) / sum(w_k)`` name by name, in float64 then cast back."""
    if not samples or len(samples) != len(weights):
        raise ValueError("need one weight per sample and at least one sample")
    total = float(sum(weights))
    if not total > 0.0:
        raise ValueError("weights must sum to a positive number")
    first = samples[0]
    mean: Params = {}
    for name, reference in first.items():
        acc = torch.zeros(reference.shape, dtype=torch.float64)
        for sample, weight in zip(samples, weights, strict=True):
            acc += sample[name].double() * (weight / total)
        mean[name] = acc.to(reference.dtype)
    return mean
