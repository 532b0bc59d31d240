"""Killing the host of a job's coordinator hands the job to a standby, which finishes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshmind.bus.protocol import FlJobSpec
from meshmind.lab import node_names
from tests.kit.fl import fl_lab, start_job, wait_for_rounds, wait_until_done

NODES = node_names(5)
ROUNDS = 5


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
        started = await start_job(bus, "n1", spec)
        assert started.coordinator == "n1"
        before = await wait_for_rounds(bus, "failover", 2, NODES)
        await mesh.kill("n1")
        done = await wait_until_done(bus, "failover", survivors, within=600)

    assert done.state == "done"
    assert done.coordinator != "n1"
    assert done.takeovers >= 1
    rounds = [m.round for m in done.history]
    assert rounds == list(range(1, ROUNDS + 1))
    assert [m.version for m in done.history] == rounds
    assert done.history[: len(before.history)] == before.history
    resumed = [m for m in done.history if m.coordinator != "n1"]
    assert resumed
    assert all("n1" not in m.participants for m in resumed)
    assert done.history[-1].accuracy > done.initial_accuracy
