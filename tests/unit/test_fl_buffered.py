"""FedBuff with link-aware weights: nobody waits for a slow link, stale work counts for less."""

from __future__ import annotations

import heapq
import math
import random

import pytest
import torch

from meshmind.fl import (
    Aggregation,
    Contribution,
    FedBuff,
    Params,
    UpdateRejected,
    link_factor,
    staleness_discount,
)

SEEDS = range(30)


def params(value: float) -> Params:
    return {"w": torch.full((3,), value), "b": torch.full((2,), value)}


def test_weights_fall_with_staleness_and_link_quality() -> None:
    assert [staleness_discount(s) for s in (0, 3, 8)] == pytest.approx([1.0, 0.5, 1 / 3])
    assert link_factor(1.0) == 1.0
    assert link_factor(0.0) == pytest.approx(0.1)
    assert link_factor(0.5, floor=0.0) == 0.5
    assert link_factor(math.nan) == pytest.approx(0.1)
    assert link_factor(7.0) == 1.0


def test_the_buffer_aggregates_when_full_with_link_and_staleness_weights() -> None:
    buffer = FedBuff(params(0.0), buffer_size=2, max_staleness=3)
    assert buffer.submit(Contribution("n1", params(1.0), 10, base_version=0)) is None
    first = buffer.submit(Contribution("n2", params(3.0), 10, base_version=0, link_quality=0.0))
    assert first is not None
    assert first.version == 1 == buffer.version
    # n2's link scores 0: weight 0.1 against n1's 1.
    assert first.weights == pytest.approx((1 / 1.1, 0.1 / 1.1))
    assert float(first.params["w"][0]) == pytest.approx((1.0 + 0.3) / 1.1)
    # A contribution trained from version 0 now counts as its change from version 0,
    # applied to version 1 and discounted by 1/sqrt(2).
    buffer.submit(Contribution("n3", params(2.0), 10, base_version=0))
    second = buffer.submit(Contribution("n1", params(first.params["w"][0].item() + 1.0), 10, 1))
    assert second is not None
    assert second.staleness == (1, 0)
    stale, fresh = 1 / math.sqrt(2), 1.0
    expected = first.params["w"][0].item() + (stale * 2.0 + fresh * 1.0) / (stale + fresh)
    assert float(second.params["w"][0]) == pytest.approx(expected, rel=1e-6)


def test_too_stale_future_and_invalid_contributions_are_rejected() -> None:
    buffer = FedBuff(params(0.0), buffer_size=1, max_staleness=1, max_update_norm=10.0)
    buffer.submit(Contribution("n1", params(0.1), 1, base_version=0))
    buffer.submit(Contribution("n1", params(0.2), 1, base_version=1))
    with pytest.raises(UpdateRejected, match="2 versions stale"):
        buffer.submit(Contribution("n2", params(0.1), 1, base_version=0))
    with pytest.raises(UpdateRejected, match="in the future"):
        buffer.submit(Contribution("n2", params(0.1), 1, base_version=7))
    with pytest.raises(UpdateRejected, match="non-finite"):
        buffer.submit(Contribution("n2", params(math.nan), 1, base_version=2))
    with pytest.raises(UpdateRejected, match="exceeds the bound"):
        buffer.submit(Contribution("n2", params(100.0), 1, base_version=2))
    assert buffer.pending == 0
    assert buffer.version == 2


def remembering_run(remember: bool) -> list[Aggregation]:
    """A slow host's one update (+1 from version 0), then a fast host's updates that change
    nothing, one version each, until version 5 (buffer of 1, ``max_staleness`` 3)."""
    buffer = FedBuff(params(0.0), buffer_size=1, max_staleness=3, remember=remember)
    made = [buffer.submit(Contribution("slow", params(1.0), 10, base_version=0))]
    while buffer.version < 5:
        unchanged = params(buffer.params["w"][0].item())
        made.append(buffer.submit(Contribution("fast", unchanged, 10, buffer.version)))
    return [aggregation for aggregation in made if aggregation is not None]


def test_remembered_updates_keep_a_slow_host_counting_until_too_stale() -> None:
    forgetful = remembering_run(remember=False)
    assert [a.nodes for a in forgetful] == [("slow",), *[("fast",)] * 4]
    assert [a.params["w"][0].item() for a in forgetful] == pytest.approx([1.0] * 5)

    remembering = remembering_run(remember=True)
    assert [a.nodes for a in remembering] == [("slow",), *[("slow", "fast")] * 3, ("fast",)]
    assert [a.staleness for a in remembering[1:4]] == [(1, 0), (2, 0), (3, 0)]
    # Each version still moves towards the slow host's update, by its discounted share.
    expected = [1.0]
    for staleness in (1, 2, 3):
        share = staleness_discount(staleness) / (staleness_discount(staleness) + 1.0)
        expected.append(expected[-1] + share)
    expected.append(expected[-1])
    assert [a.params["w"][0].item() for a in remembering] == pytest.approx(expected, rel=1e-6)
    for aggregation in remembering:
        assert sum(aggregation.weights) == pytest.approx(1.0)


SLOW_DELAY = 10.0


def simulate(seed: int) -> tuple[FedBuff, list[tuple[float, Aggregation]], float]:
    """Four trainers on good links (1-2 s a round) and one behind a bad link (10 s, link
    quality 0.2), each pulling the newest global version, training, and pushing back; the
    buffer aggregates every three arrivals, up to version 20.

    Every trainer moves the model halfway towards its own target. Returns the buffer, each
    aggregation with its simulated time, and when the slow trainer first arrived.
    """
    rng = random.Random(seed)
    nodes = {f"n{i}": (1.0 + rng.random(), 0.9 + 0.1 * rng.random()) for i in range(1, 5)}
    nodes["slow"] = (SLOW_DELAY, 0.2)
    targets = {node: rng.uniform(-1, 1) for node in nodes}
    buffer = FedBuff(params(0.0), buffer_size=3, max_staleness=30)
    events: list[tuple[float, str, int]] = [
        (delay * rng.uniform(0.8, 1.2), node, 0) for node, (delay, _) in nodes.items()
    ]
    heapq.heapify(events)
    aggregations: list[tuple[float, Aggregation]] = []
    slow_arrival = math.inf
    while buffer.version < 20:
        now, node, base = heapq.heappop(events)
        delay, quality = nodes[node]
        if node == "slow":
            slow_arrival = min(slow_arrival, now)
        start = buffer.params["w"][0].item()
        trained = params(start + 0.5 * (targets[node] - start))
        done = buffer.submit(Contribution(node, trained, 50, base, quality))
        if done is not None:
            aggregations.append((now, done))
        heapq.heappush(events, (now + delay * rng.uniform(0.8, 1.2), node, buffer.version))
    return buffer, aggregations, slow_arrival


@pytest.mark.parametrize("seed", SEEDS)
def test_a_slow_link_never_holds_up_aggregation(seed: int) -> None:
    _, aggregations, slow_arrival = simulate(seed)
    assert [a.version for _, a in aggregations] == list(range(1, 21))
    assert all(len(a.nodes) == 3 for _, a in aggregations)
    # The fast trainers publish several versions before the slow one has finished once.
    assert sum(1 for t, _ in aggregations if t < slow_arrival) >= 3
    with_slow = [a for _, a in aggregations if "slow" in a.nodes]
    assert with_slow, "the slow trainer's work is used, not dropped"
    for aggregation in with_slow:
        slow = aggregation.nodes.index("slow")
        assert aggregation.staleness[slow] >= 3
        others = [w for i, w in enumerate(aggregation.weights) if i != slow]
        assert aggregation.weights[slow] < min(others)


@pytest.mark.parametrize("seed", SEEDS)
def test_buffered_runs_are_reproducible_from_the_seed(seed: int) -> None:
    first, first_log, _ = simulate(seed)
    second, second_log, _ = simulate(seed)
    assert [(t, a.nodes, a.weights) for t, a in first_log] == [
        (t, a.nodes, a.weights) for t, a in second_log
    ]
    assert torch.equal(first.params["w"], second.params["w"])
