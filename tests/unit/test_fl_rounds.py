"""A coordinator's pure parts: choosing trainers, weighing and checking a round's updates."""

from __future__ import annotations

import math

import pytest
import torch

from meshmind.federation import (
    Candidate,
    MeasuredLink,
    checkpoint_object,
    host_data,
    host_link_quality,
    job_of_checkpoint,
    link_qualities,
    select_trainers,
    update_object,
)
from meshmind.fl import Krum, Received, aggregate_round, fitted, make_strategy

NAME = "layer.lora_B.default.weight"
GLOBAL = {NAME: torch.zeros(2, 2)}


def update(node: str, value: float, examples: int = 10, link: float = 1.0) -> Received:
    return Received(
        node, {"layer.lora_B.default.weight": torch.full((2, 2), value)}, examples, link
    )


def test_a_hosts_link_quality_is_the_median_of_what_others_measure_towards_it() -> None:
    links = [
        MeasuredLink("n2", "n1", 0.9),
        MeasuredLink("n3", "n1", 0.2),
        MeasuredLink("n4", "n1", 0.8),
        MeasuredLink("n1", "n1", 0.0),
        MeasuredLink("n1", "n2", 0.1),
    ]
    assert host_link_quality(links, "n1") == 0.8
    assert host_link_quality(links, "n5") is None
    assert link_qualities(links, ["n1", "n5"]) == {"n1": 0.8, "n5": 1.0}


def test_selection_prefers_good_links_then_light_load_and_skips_unreachable_hosts() -> None:
    candidates = [
        Candidate("n1", cpu_pct=0.0),
        Candidate("n2", cpu_pct=90.0),
        Candidate("n3", cpu_pct=10.0),
        Candidate("n4", cpu_pct=0.0),
    ]
    quality = {"n1": 0.3, "n2": 1.0, "n3": 1.0, "n4": 0.01}
    assert select_trainers(candidates, 4, quality) == ["n3", "n2", "n1"]
    assert select_trainers(candidates, 1, quality) == ["n3"]
    with pytest.raises(ValueError, match="count"):
        select_trainers(candidates, 0, quality)


def test_a_nan_update_is_rejected_with_its_reason_and_the_rest_aggregated() -> None:
    poisoned = update("n3", math.nan)
    outcome = aggregate_round(
        make_strategy("fedavg"),
        GLOBAL,
        [update("n1", 1.0), update("n2", 3.0), poisoned],
        link_weighting=False,
        max_update_norm=100.0,
    )
    assert set(outcome.rejected) == {"n3"}
    assert "non-finite" in outcome.rejected["n3"]
    assert outcome.weights == {"n1": 0.5, "n2": 0.5}
    assert torch.allclose(outcome.params[NAME], torch.full((2, 2), 2.0))


def test_link_weighting_moves_weight_towards_the_better_link() -> None:
    updates = [update("n1", 1.0, link=1.0), update("n2", 3.0, link=0.0)]
    by_examples = aggregate_round(
        make_strategy("fedavg"), GLOBAL, updates, link_weighting=False, max_update_norm=100.0
    )
    by_link = aggregate_round(
        make_strategy("fedavg"), GLOBAL, updates, link_weighting=True, max_update_norm=100.0
    )
    assert by_examples.weights["n1"] == pytest.approx(0.5)
    assert by_link.weights["n1"] == pytest.approx(1.0 / 1.1)
    assert by_link.params[NAME][0, 0] < 2.0


def test_krum_with_fewer_updates_than_configured_still_leaves_the_outlier_out() -> None:
    strategy = make_strategy("krum")
    assert isinstance(fitted(strategy, 4), Krum)
    updates = [update("n1", 1.0), update("n2", 1.1), update("n3", 0.9), update("n4", 500.0)]
    outcome = aggregate_round(
        strategy, GLOBAL, updates, link_weighting=False, max_update_norm=math.inf
    )
    assert outcome.weights["n4"] == 0.0
    assert float(outcome.params[NAME].max()) < 2.0


def test_with_no_valid_update_the_global_adapter_stays() -> None:
    outcome = aggregate_round(
        make_strategy("fedavg"),
        GLOBAL,
        [update("n1", 1000.0)],
        link_weighting=False,
        max_update_norm=1.0,
    )
    assert outcome.weights == {}
    assert "exceeds the bound" in outcome.rejected["n1"]
    assert torch.equal(outcome.params[NAME], torch.zeros(2, 2))


def test_a_lab_host_trains_on_the_share_its_id_numbers() -> None:
    assert host_data("n3", node_index=None, nodes=5, data_dir=None).node_index == 2
    assert host_data("n7", node_index=None, nodes=5, data_dir=None).node_index == 1
    assert host_data("pi-kitchen", node_index=None, nodes=5, data_dir=None).node_index == 0
    assert host_data("n3", node_index=4, nodes=5, data_dir=None).node_index == 4
    with pytest.raises(ValueError, match="not in"):
        host_data("n3", node_index=5, nodes=5, data_dir=None)


def test_checkpoints_are_found_by_name_and_updates_are_not_mistaken_for_them() -> None:
    assert job_of_checkpoint(checkpoint_object("job-1")) == "job-1"
    assert job_of_checkpoint(update_object("job-1", 2, 1, "n1")) is None
    assert update_object("job-1", 2, 1, "n1") != update_object("job-1", 2, 2, "n1")
