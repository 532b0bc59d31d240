"""Voter selection: all vote up to 7 hosts; from 8, the 5 best, moved one change at a time."""

from __future__ import annotations

import random

import pytest

from meshmind.consensus._voters import Candidate, next_change, target_conf
from meshmind.raft import ConfState


def _hosts(count: int, score: float = 0.9) -> list[Candidate]:
    return [Candidate(f"n{i}", 3600.0, score) for i in range(1, count + 1)]


@pytest.mark.parametrize("count", [1, 3, 7])
def test_up_to_seven_hosts_all_vote(count: int) -> None:
    conf = target_conf(_hosts(count), ConfState(frozenset({"n1"})))
    assert conf.voters == {f"n{i}" for i in range(1, count + 1)}
    assert not conf.learners


def test_from_eight_hosts_the_five_best_linked_and_stable_vote() -> None:
    hosts = [Candidate(f"n{i}", 3600.0, 0.5 + i / 100) for i in range(1, 11)]
    hosts[9] = Candidate("n10", 5.0, 0.99)  # best link, just started: not yet trusted
    conf = target_conf(hosts, ConfState())
    assert conf.voters == {"n5", "n6", "n7", "n8", "n9"}
    assert conf.learners == {"n1", "n2", "n3", "n4", "n10"}


def test_sitting_voters_keep_their_seats_against_a_slightly_better_host() -> None:
    current = ConfState(frozenset({"n1", "n2", "n3", "n4", "n5"}), frozenset({"n6", "n7", "n8"}))
    hosts = _hosts(8, 0.8)
    hosts[7] = Candidate("n8", 3600.0, 0.85)
    assert target_conf(hosts, current) == current


def test_a_voter_that_went_down_is_replaced_by_a_live_learner() -> None:
    current = ConfState(frozenset({"n1", "n2", "n3", "n4", "n5"}), frozenset({"n6", "n7", "n8"}))
    live = [h for h in _hosts(8) if h.node != "n2"]
    target = target_conf(live, current)
    assert "n2" not in target.voters
    assert "n2" in target.learners
    assert len(target.voters) == 5


@pytest.mark.parametrize("seed", range(200))
def test_single_steps_reach_the_target_without_losing_voters_below_the_target(seed: int) -> None:
    rng = random.Random(seed)
    nodes = [f"n{i}" for i in range(1, rng.randint(2, 14))]
    voters = frozenset(rng.sample(nodes, rng.randint(1, len(nodes))))
    current = ConfState(
        voters, frozenset(n for n in nodes if n not in voters and rng.random() < 0.5)
    )
    hosts = [Candidate(n, rng.uniform(0, 4000), rng.random()) for n in nodes]
    target = target_conf(hosts, current)
    assert len(target.voters) == (len(target.members) if len(target.members) <= 7 else 5)
    for _ in range(100):
        change = next_change(current, target)
        if change is None:
            break
        after = change.apply_to(current)
        if change.kind.value == "remove":
            assert len(after.voters) >= min(len(current.voters), len(target.voters)), seed
            after = ConfState(after.voters, after.learners | {change.node})
        current = after
    assert current == target, f"seed {seed}"
