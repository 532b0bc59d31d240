"""Aggregation strategies: one contract for all, robustness for the robust ones."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import torch

from meshmind.fl import (
    FedAdam,
    FedAvg,
    FedProx,
    Krum,
    Params,
    Strategy,
    TrimmedMean,
    Update,
    l2_norm,
    weighted_mean,
)
from meshmind.fl._params import subtract

SEEDS = range(20)

STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fedadam": FedAdam,
    "trimmed-mean": TrimmedMean,
    "krum": Krum,
    "multi-krum": lambda: Krum(byzantine=1, keep=3),
}
ROBUST = ["trimmed-mean", "krum", "multi-krum"]


def random_params(generator: torch.Generator, scale: float = 1.0) -> Params:
    return {
        "layer.lora_B.default.weight": torch.randn(6, 4, generator=generator) * scale,
        "head.weight": torch.randn(3, 6, generator=generator) * scale,
        "head.bias": torch.randn(3, generator=generator) * scale,
    }


def honest_updates(seed: int, count: int = 5) -> tuple[Params, list[Update]]:
    """A global model and updates scattered closely around a common step from it."""
    generator = torch.Generator().manual_seed(seed)
    global_params = random_params(generator)
    step = random_params(generator, scale=0.1)
    updates = [
        Update(
            params={
                name: global_params[name] + step[name] + 0.01 * noise
                for name, noise in random_params(generator).items()
            },
            examples=int(torch.randint(20, 200, (1,), generator=generator)),
        )
        for _ in range(count)
    ]
    return global_params, updates


def close(left: Params, right: Params, tolerance: float = 1e-6) -> bool:
    return all(torch.allclose(left[n], right[n], atol=tolerance, rtol=0) for n in left)


@pytest.mark.parametrize("name", list(STRATEGIES))
class TestStrategyContract:
    @pytest.mark.parametrize("seed", SEEDS)
    def test_identical_updates_give_that_update_back(self, name: str, seed: int) -> None:
        global_params, updates = honest_updates(seed)
        target = updates[0].params
        same = [Update(params=target, examples=u.examples) for u in updates]
        result = STRATEGIES[name]().aggregate(global_params, same)
        if name == "fedadam":
            # Server-side Adam takes a bounded step towards the update on every coordinate.
            before = subtract(target, global_params)
            after = subtract(target, result)
            for n in before:
                assert torch.all(after[n].abs() < before[n].abs())
                assert torch.all(torch.sign(after[n]) * torch.sign(before[n]) >= 0)
        else:
            assert close(result, target)

    @pytest.mark.parametrize("seed", SEEDS)
    def test_order_of_updates_does_not_matter(self, name: str, seed: int) -> None:
        global_params, updates = honest_updates(seed)
        shuffled = list(updates)
        random.Random(seed).shuffle(shuffled)
        first = STRATEGIES[name]().aggregate(global_params, updates)
        second = STRATEGIES[name]().aggregate(global_params, shuffled)
        assert close(first, second)

    def test_result_has_the_global_shapes(self, name: str) -> None:
        global_params, updates = honest_updates(0)
        result = STRATEGIES[name]().aggregate(global_params, updates)
        assert {n: t.shape for n, t in result.items()} == {
            n: t.shape for n, t in global_params.items()
        }


@pytest.mark.parametrize("name", ROBUST)
@pytest.mark.parametrize("seed", SEEDS)
def test_robust_strategies_outvote_one_hugely_scaled_update(name: str, seed: int) -> None:
    global_params, updates = honest_updates(seed)
    honest_mean = weighted_mean([u.params for u in updates[:4]], [1.0] * 4)
    attacker = Update(
        params={n: t * 1000.0 for n, t in updates[4].params.items()}, examples=updates[4].examples
    )
    attacked = [*updates[:4], attacker]
    robust = STRATEGIES[name]().aggregate(global_params, attacked)
    naive = FedAvg().aggregate(global_params, attacked)
    honest_spread = max(l2_norm(subtract(u.params, honest_mean)) for u in updates[:4])
    assert l2_norm(subtract(robust, honest_mean)) <= 2 * honest_spread
    assert l2_norm(subtract(naive, honest_mean)) > 100 * honest_spread


def test_fedavg_weights_by_examples_and_link_weight() -> None:
    a = {"w": torch.tensor([0.0])}
    b = {"w": torch.tensor([1.0])}
    by_examples = FedAvg().aggregate(a, [Update(a, examples=30), Update(b, examples=10)])
    assert float(by_examples["w"]) == pytest.approx(0.25)
    by_link = FedAvg().aggregate(
        a, [Update(a, examples=10, weight=1.0), Update(b, examples=10, weight=0.25)]
    )
    assert float(by_link["w"]) == pytest.approx(0.2)


def test_fedadam_approaches_a_fixed_target_over_rounds() -> None:
    global_params, updates = honest_updates(3)
    target = updates[0].params
    strategy = FedAdam()
    current = global_params
    start = l2_norm(subtract(target, current))
    for _ in range(10):
        current = strategy.aggregate(current, [Update(params=target, examples=1)])
    assert l2_norm(subtract(target, current)) < 0.5 * start


def test_fedprox_asks_trainers_for_a_proximal_term_and_averages_like_fedavg() -> None:
    global_params, updates = honest_updates(5)
    assert FedProx(mu=0.1).proximal_mu == 0.1
    assert FedAvg().proximal_mu == 0.0
    assert close(
        FedProx(0.1).aggregate(global_params, updates), FedAvg().aggregate(global_params, updates)
    )


def test_krum_refuses_too_few_updates_for_its_byzantine_bound() -> None:
    global_params, updates = honest_updates(0, count=4)
    with pytest.raises(ValueError, match="more than 4"):
        Krum(byzantine=1).aggregate(global_params, updates)


def test_trimmed_mean_drops_the_extremes_of_each_coordinate() -> None:
    values = [0.0, 1.0, 2.0, 3.0, 100.0]
    updates = [Update({"w": torch.tensor([v, -v])}, examples=1) for v in values]
    result = TrimmedMean(beta=0.2).aggregate({"w": torch.zeros(2)}, updates)
    assert result["w"].tolist() == pytest.approx([2.0, -2.0])


def trained_a_updates(seed: int) -> tuple[Params, list[Update]]:
    generator = torch.Generator().manual_seed(seed)
    updates = [
        Update(
            {
                "fc.lora_A.default.weight": torch.randn(2, 5, generator=generator),
                "fc.lora_B.default.weight": torch.randn(4, 2, generator=generator),
            },
            examples=10 * (k + 1),
        )
        for k in range(5)
    ]
    return {n: torch.zeros_like(t) for n, t in updates[0].params.items()}, updates


@pytest.mark.parametrize("seed", SEEDS)
def test_fedavg_averages_lora_products_when_hosts_trained_a(seed: int) -> None:
    global_params, updates = trained_a_updates(seed)
    result = FedAvg().aggregate(global_params, updates)

    def delta(params: Params) -> torch.Tensor:
        return (
            params["fc.lora_B.default.weight"].double()
            @ params["fc.lora_A.default.weight"].double()
        )

    weights = [float(u.examples) for u in updates]
    exact = sum(
        (delta(u.params) * w for u, w in zip(updates, weights, strict=True)), torch.zeros(())
    )
    exact = exact / sum(weights)
    naive = weighted_mean([u.params for u in updates], weights)
    # The rank-2 factors FedAvg returns are the best rank-2 fit of the mean delta, closer
    # than the product of the averaged factors.
    assert torch.linalg.norm(delta(result) - exact) < torch.linalg.norm(delta(naive) - exact)


def test_trimmed_mean_refuses_lora_updates_with_trained_a() -> None:
    global_params, updates = trained_a_updates(0)
    with pytest.raises(ValueError, match="needs LoRA A frozen"):
        TrimmedMean().aggregate(global_params, updates)
