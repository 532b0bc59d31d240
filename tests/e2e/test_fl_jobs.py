"""Federated jobs on a 5-host lab with the digits task: accuracy grows, churn does not stop it."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import sys
from pathlib import Path

import pytest

from meshmind.bus import Bus
from meshmind.bus.protocol import FL_METRICS, FL_STORE, FL_UPDATES, FlJobSpec, FlJobStatus
from meshmind.lab import LocalMesh, node_names
from tests.kit.fl import TRAINER, fl_lab, start_job, wait_for_round_metrics, wait_until_done
from tests.kit.recorder import Recorder

NODES = node_names(5)
ROUNDS = 6
TARGET_ACCURACY = 0.89
"""Where six FedAvg rounds take the digits adapter (0.857 before any round, about 0.90 after
six in a simulation of the same hosts, partitions and seeds)."""


def spec(job_id: str, min_updates: int) -> FlJobSpec:
    return FlJobSpec(
        job_id=job_id,
        task="digits",
        rounds=ROUNDS,
        participants=5,
        min_updates=min_updates,
        strategy="fedavg",
        weighting="examples",
        deadline_s=10.0,
        seed=0,
    )


def accuracies(status: FlJobStatus) -> list[float]:
    return [status.initial_accuracy, *(m.accuracy for m in status.history)]


async def meshctl(*args: str) -> str:
    """Run ``meshctl`` as an operator would; its standard output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshmind.ctl", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 180)
    assert process.returncode == 0, args
    return out.decode()


async def run_job(mesh: LocalMesh, bus: Bus, job_id: str, *, kill_after: int = 0) -> FlJobStatus:
    """Run a job from n1; with ``kill_after``, kill n2's trainer once that many rounds are in
    (the job then needs 3 updates a round; without churn, all 5)."""
    rounds = await Recorder.start(bus, FL_METRICS)
    await start_job(bus, "n1", spec(job_id, min_updates=3 if kill_after else 5))
    if kill_after:
        await wait_for_round_metrics(rounds, job_id, kill_after)
        await mesh.host("n2").services[TRAINER].kill()
    return await wait_until_done(bus, job_id, NODES, within=600)


@pytest.mark.timeout(1200)
async def test_a_job_improves_accuracy_and_survives_losing_a_trainer(tmp_path: Path) -> None:
    async with fl_lab(tmp_path / "lab", NODES) as (mesh, bus):
        updates = await Recorder.start(bus, FL_UPDATES)
        steady = await run_job(mesh, bus, "steady")
        reports = [report for _, report in updates.events if report.job_id == "steady"]
        store = await bus.hub().object_store(FL_STORE)
        stored = {r.adapter: await store.get(r.adapter) for r in reports}
        churned = await run_job(mesh, bus, "churned", kill_after=3)
        listed = json.loads(await meshctl("fl", "status", "--json", "--url", mesh.hub_url))
        await meshctl("fl", "plot", "steady", "--out", str(tmp_path), "--url", mesh.hub_url)

    assert {job["job_id"]: len(job["history"]) for job in listed["jobs"]} == {
        "steady": ROUNDS,
        "churned": ROUNDS,
    }
    for name in ("steady-accuracy.png", "steady-weights.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")

    history = accuracies(steady)
    assert steady.state == "done"
    assert len(steady.history) == ROUNDS
    assert [m.round for m in steady.history] == list(range(1, ROUNDS + 1))
    assert all(len(m.participants) == 5 for m in steady.history)
    assert all(later >= earlier - 0.005 for earlier, later in itertools.pairwise(history))
    assert history[-1] >= TARGET_ACCURACY
    assert history[-1] >= history[0] + 0.03
    for metrics in steady.history:
        assert sum(metrics.weights.values()) == pytest.approx(1.0)
        assert metrics.bytes_up > 0
        assert metrics.bytes_down > 0

    # Each update rode in its report (no fetch behind the report), and is in the store too.
    assert len(reports) >= 5 * ROUNDS
    for report in reports:
        assert report.adapter_data is not None
        assert hashlib.sha256(report.adapter_data).hexdigest() == report.sha256
        assert stored[report.adapter] == report.adapter_data

    assert churned.state == "done"
    assert len(churned.history) == ROUNDS
    late = churned.history[-1]
    assert "n2" not in late.participants
    assert len(late.participants) == 4
    assert abs(churned.history[-1].accuracy - steady.history[-1].accuracy) <= 0.02
