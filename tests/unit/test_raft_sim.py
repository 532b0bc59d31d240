"""Seeded simulations of a Raft cluster under faults: safe on every run, live once healed."""

from __future__ import annotations

from collections import Counter

import pytest

from meshmind.raft import RaftNode, ReadState, _log
from tests.kit.raft_sim import SimulationFailure, run_seed

SEEDS = 2000


@pytest.mark.parametrize("seed", range(SEEDS))
def test_seed_is_safe_linearizable_and_live(seed: int) -> None:
    run_seed(seed)


def test_a_run_reproduces_from_its_seed() -> None:
    assert run_seed(17) == run_seed(17)
    assert run_seed(17) != run_seed(18)


def test_the_runs_exercise_every_fault_and_feature() -> None:
    totals: Counter[str] = Counter()
    for seed in range(40):
        result = run_seed(seed)
        for name in (
            "crashes",
            "torn_writes",
            "leaders_forgotten",
            "snapshots_installed",
            "membership_changes",
            "index_reads",
            "completed",
        ):
            totals[name] += getattr(result, name)
        totals["elections"] += result.leaders > 1
    assert all(totals[name] > 0 for name in totals), totals
    assert totals["completed"] > 40 * 20


def test_the_checks_catch_a_node_that_votes_for_stale_logs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_log.RaftLog, "is_up_to_date", lambda self, index, term: True)
    failures: dict[int, str] = {}
    for seed in range(60):
        try:
            run_seed(seed)
        except SimulationFailure as failure:
            failures[seed] = str(failure)
    assert failures
    assert all(message.startswith(f"seed {seed},") for seed, message in failures.items())


def test_the_linearizability_check_catches_reads_served_without_confirming_leadership(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def read_at_once(self: RaftNode, request_id: int) -> None:
        self._read_states.append(ReadState(request_id, 0))

    monkeypatch.setattr(RaftNode, "read_index", read_at_once)
    failures = []
    for seed in range(60):
        try:
            run_seed(seed)
        except SimulationFailure:
            failures.append(seed)
    assert failures
