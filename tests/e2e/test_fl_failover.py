"""Killing the host of a job's coordinator hands the job to a standby, which finishes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshmind.bus.protocol import FL_METRICS, FlJobSpec
from meshmind.lab import node_names
from tests.kit.fl import (
    fl_lab,
    job_status,
    start_job,
    wait_for_round_metrics,
    wait_until_done,
)
from tests.kit.recorder import Recorder

NODES = node_names(5)
ROUNDS = 10
KILLED_AFTER = 2


@pytest.mark.timeout(1200)
async def test_a_standby_resumes_the_job_from_its_checkpoint(tmp_path: Path) -> None:
    spec = FlJobSpec(
        job_id="failover",
        task="digits",
        rounds=ROUNDS,
        participants=5,
        min_updates=3,
        deadline_s=10.0,
        seed=0,
    )
    survivors = NODES[1:]
    async with fl_lab(tmp_path / "lab", NODES) as (mesh, bus):
        published = await Recorder.start(bus, FL_METRICS)
        started = await start_job(bus, "n1", spec)
        assert started.coordinator == "n1"
        await wait_for_round_metrics(published, "failover", KILLED_AFTER)
        await mesh.kill("n1")
        before = await job_status(bus, "failover", "n2")
        done = await wait_until_done(bus, "failover", survivors, within=600)

    assert done.state == "done"
    assert done.coordinator != "n1"
    assert done.takeovers >= 1
    rounds = [m.round for m in done.history]
    assert rounds == list(range(1, ROUNDS + 1))
    assert [m.version for m in done.history] == rounds
    assert len(before.history) >= KILLED_AFTER
    assert done.history[: len(before.history)] == before.history
    resumed = [m for m in done.history if m.coordinator != "n1"]
    assert resumed
    assert all("n1" not in m.participants for m in resumed)
    assert done.history[-1].accuracy > done.initial_accuracy
