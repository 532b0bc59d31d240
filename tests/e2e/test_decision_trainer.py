"""A trainer whose updates are refused round after round is excluded by one agreed decision,
executed once, and the rounds after it go on without that trainer."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshmind.bus.protocol import (
    CONSENSUS_GET,
    DECISION_EVENTS,
    DECISION_HISTORY,
    FL_EXCLUSION_HOLDER,
    DecisionEvent,
    DecisionHistoryQuery,
    FlJobSpec,
    KvKey,
)
from meshmind.lab import node_names
from tests.kit.decision import DecisionLab
from tests.kit.fl import LAB_MODULES, fl_lab, start_job, wait_until_done
from tests.kit.waiting import eventually

NODES = node_names(5)
FAULTY = "n5"
ANOMALY = f"trainer-failing/{FAULTY}/"
EXCLUSION = f"fl/excluded/{FAULTY}"
FAILURES = 3
"""Refused rounds that make a failing trainer (the analysis rules' default)."""


def spec(job_id: str) -> FlJobSpec:
    """Every host trains every round (a round ends once all reported: the long deadline only
    spares a host still loading torch); the four honest updates are enough for a round."""
    return FlJobSpec(
        job_id=job_id,
        task="digits",
        rounds=FAILURES,
        participants=len(NODES),
        min_updates=3,
        strategy="fedavg",
        deadline_s=60.0,
        epochs=1,
        lr=1e-2,
        seed=0,
    )


@pytest.mark.timeout(900)
async def test_a_trainer_sending_poisoned_updates_is_excluded_from_later_rounds(
    tmp_path: Path,
) -> None:
    async with fl_lab(
        tmp_path / "lab",
        NODES,
        faults={FAULTY: "nan"},
        modules=(*LAB_MODULES, "meshmind_decision"),
        DECISION_OUTCOME_S="120",
    ) as (mesh, bus):
        lab = DecisionLab(mesh, bus)

        async def seen(event: DecisionEvent) -> None:
            lab.events.append(event)

        await bus.subscribe(DECISION_EVENTS, seen)
        await lab.ready()
        await start_job(bus, "n1", spec("poisoned"))
        poisoned = await wait_until_done(bus, "poisoned", NODES, within=300)
        await eventually(lambda: lab.of_kind("executed", ANOMALY), within=120)
        await start_job(bus, "n2", spec("after"))  # another coordinator, after the exclusion
        after = await wait_until_done(bus, "after", NODES, within=300)
        await eventually(lambda: lab.of_kind("outcome", ANOMALY), within=180)
        history = await bus.request(DECISION_HISTORY, DecisionHistoryQuery(), node="n2")
        exclusion = await bus.request(CONSENSUS_GET, KvKey(key=EXCLUSION), node="n3")

    assert poisoned.state == after.state == "done"
    assert len(poisoned.history) == FAILURES
    for metrics in poisoned.history:
        assert FAULTY in metrics.selected
        assert "non-finite" in metrics.rejected[FAULTY]
    assert len(after.history) == FAILURES
    for metrics in after.history:
        assert set(metrics.selected) == set(NODES) - {FAULTY}
        assert not metrics.rejected

    [committed] = lab.committed(ANOMALY)
    record = committed.record
    assert (record.action, record.target) == ("exclude-trainer", FAULTY)
    assert record.key == f"{ANOMALY}{poisoned.history[0].at:.6f}"  # the first refused round
    assert record.proposer != FAULTY
    assert sum(v.approve for v in record.votes) >= record.quorum == 3
    assert all("non-finite" in e.what for e in record.anomaly.evidence)
    [executed] = lab.of_kind("executed", ANOMALY)
    assert executed.node == record.executor
    assert executed.record.executed == f"{FAULTY} excluded from training for 600s ({EXCLUSION})"
    [decided] = [d for d in history.decisions if d.key == record.key]
    assert (decided.action, decided.outcome) == ("exclude-trainer", "cleared")
    assert (exclusion.value, exclusion.lease) == (FL_EXCLUSION_HOLDER, FL_EXCLUSION_HOLDER)
