"""Trainers that send NaN or hugely scaled updates are rejected or outvoted; accuracy holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshmind.bus.protocol import FlJobSpec, StrategyName
from meshmind.lab import node_names
from tests.kit.fl import fedavg_in_process, fl_lab, start_job, wait_until_done

NODES = node_names(5)
HONEST = ["n1", "n2", "n3"]
ROUNDS = 3
EPOCHS = 2
LR = 1e-2


def spec(
    job_id: str, strategy: StrategyName, max_update_norm: float, min_updates: int
) -> FlJobSpec:
    return FlJobSpec(
        job_id=job_id,
        task="digits",
        rounds=ROUNDS,
        participants=5,
        min_updates=min_updates,
        strategy=strategy,
        deadline_s=10.0,
        epochs=EPOCHS,
        lr=LR,
        seed=0,
        max_update_norm=max_update_norm,
    )


@pytest.mark.timeout(1200)
async def test_faulty_updates_are_rejected_or_outvoted_and_accuracy_holds(
    tmp_path: Path,
) -> None:
    # FedAvg over the honest hosts alone: what the job can at best keep
    reference = fedavg_in_process(
        range(len(HONEST)), len(NODES), rounds=ROUNDS, epochs=EPOCHS, lr=LR
    )
    async with fl_lab(tmp_path / "lab", NODES, faults={"n4": "nan", "n5": "scale"}) as (_, bus):
        await start_job(bus, "n1", spec("krum", "krum", 1e9, min_updates=4))
        outvoted = await wait_until_done(bus, "krum", NODES, within=600)
        await start_job(bus, "n2", spec("bounded", "fedavg", 20.0, min_updates=3))
        bounded = await wait_until_done(bus, "bounded", NODES, within=600)

    for status in (outvoted, bounded):
        assert status.state == "done"
        assert len(status.history) == ROUNDS
        for metrics in status.history:
            assert "non-finite" in metrics.rejected["n4"]
            assert set(HONEST) <= set(metrics.participants)
        assert status.history[-1].accuracy >= reference - 0.01
        assert status.history[-1].accuracy >= 0.8
    for metrics in outvoted.history:  # no norm bound: Krum leaves the scaled update out
        assert "n5" not in metrics.rejected
        assert metrics.weights["n5"] == 0.0
    for metrics in bounded.history:  # FedAvg with the norm bound refuses it outright
        assert "exceeds the bound" in metrics.rejected["n5"]
        assert "n5" not in metrics.weights
