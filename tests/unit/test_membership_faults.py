"""The membership view under faults, on simulated time: a watch that goes silent and comes back,
two instances writing one node id, and records refused where they sit."""

from __future__ import annotations

import random

import pytest

from meshmind.bus.protocol import HostLoad, PeerInfo
from meshmind.membership import CLOCK_SKEW_S, PeerView, refusal

TTL = 2.8
GAP = 1.0
BEAT = 1.0
SEEDS = range(200)


def peer(node: str, *, instance: str = "a", started_at: float = 100.0) -> PeerInfo:
    return PeerInfo(
        node=node,
        services=["meshmind-discovery"],
        capabilities=[],
        load=HostLoad(cpu_pct=1, mem_pct=1, queues={}),
        version="1",
        started_at=started_at,
        instance=instance,
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_a_silent_watch_never_turns_into_departures(seed: int) -> None:
    """Peers beat every second with random delivery delays; the watch goes silent for a random
    stretch (its consumer lost), is confirmed only while heard, then replays everyone. Nobody
    who kept beating is ever declared left."""
    rng = random.Random(seed)
    view = PeerView("n1", TTL, confirm_gap_s=GAP)
    nodes = [f"n{i}" for i in range(1, 6)]
    deaf_from = rng.uniform(3, 10)
    deaf_until = deaf_from + rng.uniform(0.5, 30)
    heard_at = 0.0
    next_beat = {n: rng.uniform(0, BEAT) for n in nodes}
    left: list[str] = []
    now = 0.0
    while now < deaf_until + 10:
        now = round(now + 0.1, 1)
        deaf = deaf_from <= now < deaf_until
        for node in nodes:
            if now >= next_beat[node]:
                next_beat[node] += BEAT + rng.uniform(-0.05, 0.2)
                if not deaf:
                    view.put(peer(node), now)
                    heard_at = now
        if not deaf and now - heard_at < GAP:
            view.confirm(heard_at)
            left += [c.node for c in view.expire(now)]
        if now == round(deaf_until + 0.5, 1):  # the watch re-established: a full snapshot
            left += [
                c.node for c in view.reconcile({n: peer(n) for n in nodes}, now) if c.kind == "left"
            ]
    assert left == [], f"seed {seed}: deaf {deaf_from:.1f}-{deaf_until:.1f}s, left {left}"


@pytest.mark.parametrize("seed", SEEDS)
def test_a_peer_that_stops_is_still_declared_left_within_the_ttl(seed: int) -> None:
    rng = random.Random(seed)
    view = PeerView("n1", TTL, confirm_gap_s=GAP)
    stop_at = rng.uniform(2, 8)
    now, declared = 0.0, None
    while now < stop_at + 10 and declared is None:
        now = round(now + 0.1, 1)
        if now < stop_at and now % 1 == 0:
            view.put(peer("n2"), now)
        view.put(peer("n1"), now)  # the observer's own beats keep the watch heard
        view.confirm(now)
        if any(c.node == "n2" for c in view.expire(now)):
            declared = now
    assert declared is not None
    assert declared - stop_at <= TTL + BEAT + 0.2


def test_a_gap_in_confirmations_restarts_every_peers_silence() -> None:
    view = PeerView("n1", TTL, confirm_gap_s=GAP)
    view.put(peer("n2"), 0)
    view.confirm(0)
    view.confirm(2.5)  # nothing heard between 0 and 2.5: the gap is the watch's
    expired_at = None
    for tenth in range(25, 80):
        view.confirm(tenth / 10)
        if view.expire(tenth / 10):
            expired_at = tenth / 10
            break
    assert expired_at == pytest.approx(2.5 + TTL + 0.1), "silence counts from the end of the gap"


def test_an_older_confirmation_changes_nothing() -> None:
    view = PeerView("n1", TTL, confirm_gap_s=GAP)
    view.confirm(5)
    view.confirm(4)
    assert view.age(6) == 1


def test_two_instances_alternating_are_a_duplicate_not_a_stream_of_updates() -> None:
    view = PeerView("n1", TTL)
    changes = []
    for step in range(20):
        instance = "a" if step % 2 == 0 else "b"
        changes.append(
            view.put(peer("n2", instance=instance, started_at=100 + ord(instance)), step / 2)
        )
    kinds = [c.kind for c in changes if c is not None]
    assert kinds == ["joined", "updated"], "one switch is news; the flapping after it is not"
    assert view.duplicates(10) == {"n2": ["a", "b"]}
    assert view.duplicates(10 + TTL + 0.1) == {}


def test_a_replacement_instance_is_an_update_not_a_duplicate() -> None:
    view = PeerView("n1", TTL)
    view.put(peer("n2", instance="old"), 0)
    change = view.put(peer("n2", instance="new", started_at=200), 1)
    assert change is not None
    assert change.kind == "updated"
    view.put(peer("n2", instance="new", started_at=200), 2)
    assert view.duplicates(2) == {}


def test_a_departure_forgets_the_instances() -> None:
    view = PeerView("n1", TTL)
    view.put(peer("n2", instance="a"), 0)
    view.put(peer("n2", instance="b"), 0.5)
    view.put(peer("n2", instance="a"), 1)
    assert view.duplicates(1)
    view.remove("n2")
    assert view.duplicates(1) == {}


def test_records_are_believed_only_where_they_sit() -> None:
    now = 1_000_000.0
    assert refusal("n2", peer("n2", started_at=now - 5), now) is None
    assert refusal("n2", peer("n2", started_at=now + CLOCK_SKEW_S - 1), now) is None
    mismatch = refusal("n9", peer("n2", started_at=now), now)
    assert mismatch is not None
    assert "n2" in mismatch
    assert "n9" in mismatch
    future = refusal("n2", peer("n2", started_at=now + 3600), now)
    assert future is not None
    assert "future" in future
