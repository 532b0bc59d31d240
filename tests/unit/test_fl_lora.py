"""Exact LoRA aggregation: the mean of the products, not the product of the means."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from meshmind.fl import (
    DigitsTask,
    Params,
    adapter_size,
    aggregate_lora,
    lora_layers,
    mean_delta,
    refactor,
    trainable_params,
)

SEEDS = range(10)


def random_factors(
    seed: int, hosts: int = 5, rank: int = 4, shape: tuple[int, int] = (24, 32)
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[float]]:
    generator = torch.Generator().manual_seed(seed)
    out_features, in_features = shape
    factors = [
        (
            torch.randn(rank, in_features, generator=generator, dtype=torch.float64),
            torch.randn(out_features, rank, generator=generator, dtype=torch.float64),
        )
        for _ in range(hosts)
    ]
    weights = [float(w) for w in torch.randint(10, 100, (hosts,), generator=generator)]
    return factors, weights


def relative_error(approximation: torch.Tensor, exact: torch.Tensor) -> float:
    return float(torch.linalg.norm(approximation - exact) / torch.linalg.norm(exact))


def weighted(tensors: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    return sum((t * w for t, w in zip(tensors, weights, strict=True)), torch.zeros(())) / sum(
        weights
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_averaging_factors_separately_is_far_from_the_mean_delta(seed: int) -> None:
    factors, weights = random_factors(seed)
    exact = mean_delta(factors, weights)
    naive = weighted([b for _, b in factors], weights) @ weighted([a for a, _ in factors], weights)
    assert relative_error(naive, exact) > 0.5


@pytest.mark.parametrize("seed", SEEDS)
def test_with_a_frozen_averaging_b_is_the_mean_delta_exactly(seed: int) -> None:
    factors, weights = random_factors(seed)
    shared_a = factors[0][0]
    frozen = [(shared_a, b) for _, b in factors]
    exact = mean_delta(frozen, weights)
    assert relative_error(weighted([b for _, b in frozen], weights) @ shared_a, exact) < 1e-12


@pytest.mark.parametrize("seed", SEEDS)
def test_svd_refactoring_is_exact_at_the_summed_rank_and_optimal_below(seed: int) -> None:
    factors, weights = random_factors(seed, hosts=3, rank=2)
    exact = mean_delta(factors, weights)
    full = refactor(exact, rank=6)
    assert relative_error(full.b @ full.a, exact) < 1e-10
    assert full.error < 1e-10
    truncated = refactor(exact, rank=2)
    residual = float(torch.linalg.norm(exact - truncated.b @ truncated.a))
    assert residual == pytest.approx(truncated.error, rel=1e-9)
    naive = weighted([b for _, b in factors], weights) @ weighted([a for a, _ in factors], weights)
    # Eckart-Young: no rank-2 product, the naive one included, is closer to the mean delta.
    assert truncated.error <= float(torch.linalg.norm(exact - naive)) + 1e-9


def lora_params(seed: int, share_a: bool) -> list[Params]:
    generator = torch.Generator().manual_seed(seed)
    a_shared = torch.randn(3, 10, generator=generator)
    updates = []
    for _ in range(4):
        a = a_shared if share_a else torch.randn(3, 10, generator=generator)
        updates.append(
            {
                "m.fc.lora_A.default.weight": a,
                "m.fc.lora_B.default.weight": torch.randn(7, 3, generator=generator),
                "m.head.weight": torch.randn(2, 7, generator=generator),
            }
        )
    return updates


def product(params: Params) -> torch.Tensor:
    return (
        params["m.fc.lora_B.default.weight"].double()
        @ params["m.fc.lora_A.default.weight"].double()
    )


@pytest.mark.parametrize("share_a", [True, False])
@pytest.mark.parametrize("seed", SEEDS)
def test_aggregate_lora_reproduces_the_mean_delta(seed: int, share_a: bool) -> None:
    updates = lora_params(seed, share_a)
    weights = [1.0, 2.0, 3.0, 4.0]
    aggregated = aggregate_lora(updates, weights)
    exact = weighted([product(u) for u in updates], weights)
    error = float(torch.linalg.norm(product(aggregated.params) - exact))
    if share_a:
        assert aggregated.refactor_errors == {}
        assert error < 1e-5
    else:
        assert error == pytest.approx(aggregated.refactor_errors["m.fc"], abs=1e-5)
        assert error > 0.0
    heads = weighted([u["m.head.weight"] for u in updates], weights)
    assert torch.allclose(aggregated.params["m.head.weight"], heads.float(), atol=1e-6)


def merged_weights(task: DigitsTask, params: Params) -> dict[str, torch.Tensor]:
    """The dense weights a LoRA model with these trainable parameters computes with."""
    model = task.build_model(seed=11)
    state = dict(model.state_dict())
    state.update(params)
    model.load_state_dict(state)
    merged: nn.Module = model.merge_and_unload()  # type: ignore[operator]
    return {name: t.detach().clone() for name, t in merged.state_dict().items()}


def test_digits_adapters_average_to_the_average_of_the_merged_models() -> None:
    task = DigitsTask()
    updates: list[Params] = []
    for node in range(3):
        model = task.build_model(seed=11)
        task.train(model, task.local_data(node, 3, seed=0).train, epochs=1, lr=1e-2)
        updates.append(trainable_params(model))
    assert all(".lora_A." not in name for name in updates[0]), "A must stay frozen"
    assert lora_layers(dict(task.build_model(seed=11).named_parameters()))
    weights = [1.0, 1.0, 1.0]
    aggregated = aggregate_lora(updates, weights)
    expected = [merged_weights(task, u) for u in updates]
    actual = merged_weights(task, aggregated.params)
    for name, tensor in actual.items():
        mean = sum((e[name] for e in expected), torch.zeros(())) / 3
        assert torch.allclose(tensor, mean, atol=1e-6), name


def test_only_the_b_factors_of_the_digits_adapter_travel() -> None:
    size = adapter_size(DigitsTask(rank=8).build_model(seed=0))
    # B is (out, rank) in float32 for the layers 64->64, 64->64 and 64->10.
    assert size.adapter_bytes == 4 * 8 * (64 + 64 + 10)
    assert size.model_bytes == 4 * (64 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10)
