"""The leader's balancer: hosts join as learners and are promoted when chosen; from 8 hosts on,
5 vote; a member gone longer than the grace period is removed and its seat refilled; the
leader hands leadership over rather than demote itself. Simulated time, many seeds."""

from __future__ import annotations

import random

import pytest

from meshmind.bus.protocol import HostLoad, LinkReport, PeerInfo
from meshmind.consensus._balancer import (
    UNMEASURED_SCORE,
    Action,
    Balancer,
    Transfer,
    candidates,
)
from meshmind.consensus._voters import Candidate
from meshmind.raft import ConfChange, ConfChangeKind, ConfState

GRACE_S = 30.0
HOUR = 3600.0


def _hosts(nodes: list[str], score: float = 0.9) -> list[Candidate]:
    return [Candidate(node, HOUR, score) for node in nodes]


def _names(count: int) -> list[str]:
    return [f"n{i}" for i in range(1, count + 1)]


def _apply(conf: ConfState, action: Action | None) -> ConfState:
    assert isinstance(action, ConfChange), action
    return action.apply_to(conf)


def _settle(balancer: Balancer, now: float, conf: ConfState, live: list[Candidate]) -> ConfState:
    """Apply the balancer's changes until it has none; at most 50."""
    for _ in range(50):
        action = balancer.step(now, conf, live)
        if action is None:
            return conf
        conf = _apply(conf, action)
    raise AssertionError(f"no fixed point from {conf}")


def _peer(node: str, started_at: float) -> PeerInfo:
    return PeerInfo(
        node=node,
        services=["meshmind-consensus"],
        capabilities=[],
        load=HostLoad(cpu_pct=0, mem_pct=0),
        version="0",
        started_at=started_at,
    )


def _link(source: str, target: str, score: float) -> LinkReport:
    return LinkReport(
        source=source,
        target=target,
        state="good",
        score=score,
        delivery=1.0,
        rtt_ms=1.0,
        jitter_ms=0.1,
        probes=10,
        at=0.0,
    )


def test_candidates_carry_uptime_and_the_mean_score_of_links_between_live_hosts() -> None:
    peers = [_peer("n1", 1000.0), _peer("n2", 1900.0), _peer("n3", 1990.0)]
    links = [
        _link("n1", "n2", 0.8),
        _link("n2", "n1", 0.6),
        _link("n1", "n9", 0.0),  # n9 is gone: says nothing about n1
    ]
    found = {c.node: c for c in candidates(peers, links, now=2000.0)}
    assert [(c.node, c.uptime_s) for c in found.values()] == [
        ("n1", 1000.0),
        ("n2", 100.0),
        ("n3", 10.0),
    ]
    assert found["n1"].link_score == pytest.approx(0.7)
    assert found["n2"].link_score == pytest.approx(0.7)
    assert found["n3"].link_score == UNMEASURED_SCORE


def test_eight_voters_are_brought_down_to_five_one_change_at_a_time() -> None:
    nodes = _names(8)
    live = [Candidate(n, HOUR, 0.5 + i / 20) for i, n in enumerate(nodes)]
    conf = ConfState(frozenset(nodes))
    balancer = Balancer("n8", GRACE_S)
    steps = 0
    while (action := balancer.step(0.0, conf, live)) is not None:
        conf = _apply(conf, action)
        steps += 1
        assert len(conf.voters) >= 5
    assert conf == ConfState(
        frozenset({"n4", "n5", "n6", "n7", "n8"}), frozenset({"n1", "n2", "n3"})
    )
    assert steps == 6, "each demotion is a removal and a re-add as learner"


def test_a_new_host_joins_as_a_learner_then_is_promoted() -> None:
    conf = ConfState(frozenset(_names(3)))
    balancer = Balancer("n1", GRACE_S)
    live = _hosts(_names(4))
    first = balancer.step(0.0, conf, live)
    assert first == ConfChange(ConfChangeKind.ADD_LEARNER, "n4")
    conf = _apply(conf, first)
    assert balancer.step(0.0, conf, live) == ConfChange(ConfChangeKind.ADD_VOTER, "n4")


def test_an_eighth_host_stays_a_learner_when_it_is_no_better() -> None:
    conf = ConfState(frozenset(_names(7)))
    live = _hosts(_names(8))
    live[7] = Candidate("n8", HOUR, 0.5)
    conf = _settle(Balancer("n1", GRACE_S), 0.0, conf, live)
    assert len(conf.voters) == 5
    assert "n8" in conf.learners
    assert conf.members == set(_names(8))


def test_a_voter_gone_past_the_grace_period_is_replaced_by_a_learner() -> None:
    voters = frozenset(_names(5))
    conf = ConfState(voters, frozenset({"n6", "n7", "n8", "n9"}))
    balancer = Balancer("n1", GRACE_S)
    live = [h for h in _hosts(_names(9)) if h.node != "n3"]
    live[-1] = Candidate("n9", HOUR, 0.95)  # the best learner
    assert balancer.step(100.0, conf, _hosts(_names(9))) is None
    assert balancer.step(101.0, conf, live) is None, "within the grace period n3 keeps its seat"
    assert balancer.step(100.0 + GRACE_S - 0.5, conf, live) is None
    after = 101.0 + GRACE_S
    promote = balancer.step(after, conf, live)
    assert promote == ConfChange(ConfChangeKind.ADD_VOTER, "n9"), "promote before removing"
    conf = _apply(conf, promote)
    remove = balancer.step(after, conf, live)
    assert remove == ConfChange(ConfChangeKind.REMOVE, "n3")
    conf = _apply(conf, remove)
    assert balancer.step(after, conf, live) is None
    assert conf == ConfState(
        frozenset({"n1", "n2", "n4", "n5", "n9"}), frozenset({"n6", "n7", "n8"})
    )


def test_with_seven_left_all_of_them_vote() -> None:
    conf = ConfState(frozenset(_names(5)), frozenset({"n6", "n7", "n8"}))
    live = [h for h in _hosts(_names(8)) if h.node != "n3"]
    balancer = Balancer("n1", GRACE_S)
    assert balancer.step(0.0, conf, live) is None
    conf = _settle(balancer, GRACE_S, conf, live)
    assert conf == ConfState(frozenset({"n1", "n2", "n4", "n5", "n6", "n7", "n8"}))


def test_a_host_back_within_the_grace_period_costs_no_change() -> None:
    conf = ConfState(frozenset(_names(3)))
    balancer = Balancer("n1", GRACE_S)
    everyone = _hosts(_names(3))
    assert balancer.step(0.0, conf, everyone[:2]) is None
    assert balancer.step(GRACE_S - 1, conf, everyone) is None
    assert balancer.step(GRACE_S + 1, conf, everyone[:2]) is None, "its clock started again"
    assert balancer.step(2 * GRACE_S + 1, conf, everyone[:2]) == ConfChange(
        ConfChangeKind.REMOVE, "n3"
    )


def test_a_learner_gone_past_the_grace_period_is_removed() -> None:
    conf = ConfState(frozenset(_names(5)), frozenset({"n6", "n7", "n8", "n9"}))
    balancer = Balancer("n1", GRACE_S)
    live = [h for h in _hosts(_names(9)) if h.node != "n7"]
    assert balancer.step(0.0, conf, live) is None
    assert balancer.step(GRACE_S, conf, live) == ConfChange(ConfChangeKind.REMOVE, "n7")


def test_the_leader_hands_over_rather_than_demote_itself() -> None:
    nodes = _names(8)
    live = [Candidate(n, HOUR, 0.9) for n in nodes]
    live[0] = Candidate("n1", HOUR, 0.1)  # the leader's links are the worst
    conf = ConfState(frozenset(nodes))
    action = Balancer("n1", GRACE_S).step(0.0, conf, live)
    assert isinstance(action, Transfer)
    assert action.to in conf.voters
    assert action.to != "n1"


def _simulate(seed: int) -> None:
    """Hosts come and go at random; the balancer runs every second on whoever leads. Checks
    every action applies, the leader is never removed, and once churn stops and the grace
    period passes the group is every live host, with all voting up to 7 and 5 from 8 on."""
    rng = random.Random(seed)
    pool = _names(rng.randint(2, 12))
    started = dict.fromkeys(pool, 0.0)
    up = set(rng.sample(pool, rng.randint(1, len(pool))))
    conf = ConfState(frozenset(up))
    leader = rng.choice(sorted(up))
    scores = {n: rng.random() for n in pool}
    balancer = Balancer(leader, GRACE_S)
    now = 0.0

    def live() -> list[Candidate]:
        return [Candidate(n, now - started[n], scores[n]) for n in sorted(up)]

    def tick() -> None:
        nonlocal conf, leader, balancer
        action = balancer.step(now, conf, live())
        if isinstance(action, Transfer):
            assert action.to in conf.voters, seed
            assert action.to in up, seed
            leader = action.to
            balancer = Balancer(leader, GRACE_S)
        elif action is not None:
            assert not (action.kind is ConfChangeKind.REMOVE and action.node == leader), seed
            conf = action.apply_to(conf)

    for _ in range(300):
        now += 1.0
        if rng.random() < 0.05:
            host = rng.choice(pool)
            if host in up and host != leader:
                up.discard(host)
            elif host not in up:
                up.add(host)
                started[host] = now
        tick()
    now += GRACE_S
    for _ in range(60):
        now += 1.0
        tick()
    assert conf.members == up, f"seed {seed}: {conf} with {sorted(up)} up"
    expected = len(up) if len(up) <= 7 else 5
    assert len(conf.voters) == expected, f"seed {seed}: {conf}"
    assert leader in conf.voters, seed


@pytest.mark.parametrize("seed", range(300))
def test_random_churn_settles_on_the_live_hosts(seed: int) -> None:
    _simulate(seed)
