"""Exact aggregation of LoRA adapters: average the products ``B @ A``, never the factors alone.

A LoRA layer adds ``scale * B @ A`` to a frozen weight. The mean of the hosts' updates is the
mean of their products, and ``mean(B) @ mean(A)`` is not that: it adds cross terms
``B_j @ A_k`` that no host trained. Two exact ways out:

- **frozen A** (as in FFA-LoRA): every host keeps ``A`` at the shared initialisation (same seed)
  and trains only ``B``. Then ``sum_k w_k B_k @ A = (sum_k w_k B_k) @ A`` by linearity, so the
  weighted mean of ``B`` *is* the weighted mean of the deltas, exactly. The built-in tasks do this.
- **trained A**: aggregate the products, then factor the mean delta again by truncated SVD to
  rank ``r`` for the next round. By Eckart-Young this is the best rank-``r`` approximation; its
  Frobenius error is the norm of the discarded singular values (zero when the sum of the
  hosts' ranks is at most ``r``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from meshmind.fl._params import Params, weighted_mean

LORA_A = ".lora_A."
LORA_B = ".lora_B."


def freeze_lora_a(model: nn.Module) -> None:
    """Stop training every LoRA ``A`` factor, keeping it at its (seeded) initialisation."""
    for name, parameter in model.named_parameters():
        if LORA_A in name:
            parameter.requires_grad_(False)


def lora_layers(names: Sequence[str] | Mapping[str, torch.Tensor]) -> dict[str, tuple[str, str]]:
    """Adapted layers by prefix -> the names of their ``(A, B)`` factors (both present)."""
    keys = set(names)
    layers: dict[str, tuple[str, str]] = {}
    for name in keys:
        if LORA_A in name:
            b_name = name.replace(LORA_A, LORA_B)
            if b_name in keys:
                layers[name.split(LORA_A)[0]] = (name, b_name)
    return layers


def mean_delta(
    factors: Sequence[tuple[torch.Tensor, torch.Tensor]], weights: Sequence[float]
) -> torch.Tensor:
    """The weighted mean of the products ``B_k @ A_k`` for factors ``(A_k, B_k)``, float64."""
    if not factors or len(factors) != len(weights):
        raise ValueError("need one weight per factor pair and at least one pair")
    total = float(sum(weights))
    return sum(
        (b.double() @ a.double() * (w / total) for (a, b), w in zip(factors, weights, strict=True)),
        start=torch.zeros(()),
    )


@dataclass(frozen=True)
class Refactored:
    """A delta factored again as ``B @ A`` of a given rank, and what that cost."""

    a: torch.Tensor
    b: torch.Tensor
    error: float
    """Frobenius norm of ``delta - B @ A``: the norm of the discarded singular values."""


def refactor(delta: torch.Tensor, rank: int) -> Refactored:
    """The best rank-``rank`` factors of ``delta`` (truncated SVD), singular values split evenly."""
    if rank < 1:
        raise ValueError("rank must be at least 1")
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    kept = min(rank, s.shape[0])
    root = s[:kept].sqrt()
    b = u[:, :kept] * root
    a = root[:, None] * vh[:kept]
    if kept < rank:
        b = torch.cat([b, torch.zeros(b.shape[0], rank - kept, dtype=b.dtype)], dim=1)
        a = torch.cat([a, torch.zeros(rank - kept, a.shape[1], dtype=a.dtype)], dim=0)
    error = float(s[kept:].pow(2).sum().sqrt())
    return Refactored(a=a, b=b, error=error)


@dataclass(frozen=True)
class LoraAggregate:
    """Aggregated parameters and, per layer whose ``A`` factors differed, the SVD error."""

    params: Params
    refactor_errors: dict[str, float]


def aggregate_lora(updates: Sequence[Params], weights: Sequence[float]) -> LoraAggregate:
    """The weighted mean of the updates with each LoRA layer's delta averaged exactly.

    Layers whose ``A`` is the same in every update (frozen) average ``B``: exact. Layers whose
    ``A`` differs average the products and factor the mean back to the adapter's rank.
    Parameters outside LoRA factors (classification heads) are averaged as they are.
    """
    params = weighted_mean(updates, weights)
    errors: dict[str, float] = {}
    for layer, (a_name, b_name) in lora_layers(updates[0]).items():
        first_a = updates[0][a_name]
        if all(torch.equal(update[a_name], first_a) for update in updates):
            params[a_name] = first_a.clone()
            continue
        delta = mean_delta([(u[a_name], u[b_name]) for u in updates], weights)
        factored = refactor(delta, rank=first_a.shape[0])
        params[a_name] = factored.a.to(first_a.dtype)
        params[b_name] = factored.b.to(updates[0][b_name].dtype)
        errors[layer] = factored.error
    return LoraAggregate(params=params, refactor_errors=errors)


@dataclass(frozen=True)
class AdapterSize:
    """What travels each round against what a full model would weigh."""

    adapter_bytes: int
    """The trainable parameters: LoRA ``B`` factors (and ``A`` if trained) and heads."""
    model_bytes: int
    """Every parameter of the underlying model, adapters and saved-module copies excluded."""

    @property
    def fraction(self) -> float:
        """``adapter_bytes / model_bytes``."""
        return self.adapter_bytes / self.model_bytes


def adapter_size(model: nn.Module) -> AdapterSize:
    """Bytes of the trainable parameters and of the full model, counted from the tensors."""
    adapter = 0
    full = 0
    for name, parameter in model.named_parameters():
        size = parameter.numel() * parameter.element_size()
        if parameter.requires_grad:
            adapter += size
        if "lora_" not in name and ".modules_to_save." not in name:
            full += size
    return AdapterSize(adapter_bytes=adapter, model_bytes=full)
