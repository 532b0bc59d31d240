"""Update validation: every way an update can be unfit is refused with a clear reason."""

from __future__ import annotations

import math

import pytest
import torch

from meshmind.fl import Params, UpdateRejected, validate_update


def global_params() -> Params:
    return {"b": torch.zeros(4, 2), "head": torch.zeros(3)}


def test_a_small_finite_update_passes_and_reports_its_norm() -> None:
    update = {"b": torch.full((4, 2), 0.5), "head": torch.zeros(3)}
    norm = validate_update(global_params(), update, max_update_norm=10.0)
    assert norm == pytest.approx(math.sqrt(8 * 0.25))


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        ({"b": torch.zeros(4, 2)}, "missing parameters: head"),
        (
            {"b": torch.zeros(4, 2), "head": torch.zeros(3), "extra": torch.zeros(1)},
            "unexpected parameters: extra",
        ),
        ({"b": torch.zeros(2, 4), "head": torch.zeros(3)}, r"b: shape \(2, 4\), expected \(4, 2\)"),
        (
            {"b": torch.zeros(4, 2), "head": torch.tensor([0.0, math.nan, 1.0])},
            "head: 1 non-finite values",
        ),
        (
            {"b": torch.full((4, 2), math.inf), "head": torch.zeros(3)},
            "b: 8 non-finite values",
        ),
        ({"b": torch.zeros(4, 2), "head": torch.zeros(3, dtype=torch.int64)}, "not floating"),
        (
            {"b": torch.full((4, 2), 1000.0), "head": torch.zeros(3)},
            "update norm 2828 exceeds the bound 10",
        ),
    ],
)
def test_unfit_updates_are_rejected_with_the_reason(update: Params, reason: str) -> None:
    with pytest.raises(UpdateRejected, match=reason):
        validate_update(global_params(), update, max_update_norm=10.0)


def test_the_norm_is_of_the_change_not_of_the_parameters() -> None:
    far = {"b": torch.full((4, 2), 100.0), "head": torch.full((3,), 100.0)}
    near = {name: tensor + 0.01 for name, tensor in far.items()}
    assert validate_update(far, near, max_update_norm=1.0) < 1.0


def test_no_bound_still_checks_values() -> None:
    update = {"b": torch.full((4, 2), 1e30), "head": torch.zeros(3)}
    assert validate_update(global_params(), update, max_update_norm=math.inf) > 1e30
    update["head"] = torch.tensor([math.nan, 0.0, 0.0])
    with pytest.raises(UpdateRejected, match="non-finite"):
        validate_update(global_params(), update, max_update_norm=math.inf)
