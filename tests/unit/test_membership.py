"""The membership view and the load balancer, on simulated time."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshmind.bus.protocol import HostLoad, PeerInfo
from meshmind.membership import Change, PeerView, cpu_percent, least_loaded, memory_percent
from meshmind.membership._host_load import read_cpu_times

TTL = 3.0


def peer(
    node: str,
    *,
    cpu: float = 10,
    caps: tuple[str, ...] = (),
    queued: int = 0,
    services: tuple[str, ...] = ("meshmind-discovery",),
) -> PeerInfo:
    return PeerInfo(
        node=node,
        services=list(services),
        capabilities=list(caps),
        load=HostLoad(cpu_pct=cpu, mem_pct=5, queues={"svc": queued} if queued else {}),
        version="1",
        started_at=100.0,
    )


def test_first_sighting_joins_and_only_identity_changes_update() -> None:
    view = PeerView("n1", TTL)
    assert view.put(peer("n2"), now=0) == Change("joined", "n2", peer("n2"))
    assert view.put(peer("n2", cpu=90), now=1) is None, "load changes every beat: not news"
    changed = peer("n2", services=("meshmind-discovery", "meshmind-health"))
    assert view.put(changed, now=2) == Change("updated", "n2", changed)


def test_silent_peers_expire_after_the_ttl_but_not_before() -> None:
    view = PeerView("n1", TTL)
    view.confirm(now=0)
    view.put(peer("n2"), now=0)
    view.put(peer("n3"), now=2)
    view.confirm(now=3)
    assert view.expire(now=3.0) == []
    view.confirm(now=3.1)
    assert view.expire(now=3.1) == [Change("left", "n2", peer("n2"))]
    assert [p.node for p in view.peers()] == ["n3"]


def test_a_stale_view_keeps_its_peers_and_forgives_the_silence_on_reconnect() -> None:
    view = PeerView("n1", TTL)
    view.put(peer("n2"), now=0)
    view.confirm(now=0)
    assert view.stale(now=10, after_s=2)
    assert view.expire(now=10) == [], "unconfirmed: silence may be ours, not theirs"
    assert [p.node for p in view.peers()] == ["n2"]
    assert view.age(now=10) == 10
    view.confirm(now=10)
    assert view.expire(now=10.5) == []


def test_reconcile_announces_the_differences_only() -> None:
    view = PeerView("n1", TTL)
    view.put(peer("n2"), now=0)
    view.put(peer("n3"), now=0)
    changes = view.reconcile({"n3": peer("n3"), "n4": peer("n4")}, now=5)
    assert sorted((c.kind, c.node) for c in changes) == [("joined", "n4"), ("left", "n2")]
    assert not view.stale(now=5, after_s=1)


def test_a_peer_heard_lately_but_missing_from_a_snapshot_is_left_to_expire() -> None:
    view = PeerView("n1", TTL)
    view.put(peer("n2"), now=0)
    view.put(peer("n3"), now=0)
    view.confirm(now=0)
    # n3's record was replaced while the snapshot was read: the new one comes after it.
    assert view.reconcile({"n2": peer("n2")}, now=0.5) == []
    assert view.put(peer("n3"), now=0.6) is None, "n3 never left, so it does not join again"
    assert view.reconcile({"n2": peer("n2")}, now=1.0) == []
    view.confirm(now=TTL + 1.0)
    assert [(c.kind, c.node) for c in view.expire(now=TTL + 1.0)] == [("left", "n3")]


def test_remove_is_idempotent() -> None:
    view = PeerView("n1", TTL)
    view.put(peer("n2"), now=0)
    assert view.remove("n2") is not None
    assert view.remove("n2") is None


def test_least_loaded_peer_with_the_capability_wins() -> None:
    peers = [
        peer("n1", cpu=50, caps=("train",)),
        peer("n2", cpu=20, caps=("train",)),
        peer("n3", cpu=5),
        peer("n4", cpu=10, caps=("train",), queued=10),
    ]
    chosen = least_loaded(peers, "train")
    assert chosen is not None
    assert chosen.node == "n2"
    fallback = least_loaded(peers)
    assert fallback is not None
    assert fallback.node == "n3"
    assert least_loaded(peers, "gpu") is None


def test_ties_go_to_the_smaller_node_id() -> None:
    chosen = least_loaded([peer("n9"), peer("n10"), peer("n2")])
    assert chosen is not None
    assert chosen.node == "n10"  # plain string order: deterministic on every host


def test_cpu_and_memory_from_proc_files(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
    before = read_cpu_times(tmp_path)
    (tmp_path / "stat").write_text("cpu  150 0 150 900 0 0 0 0 0 0\n")
    assert cpu_percent(before, read_cpu_times(tmp_path)) == pytest.approx(50.0)
    (tmp_path / "meminfo").write_text("MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 250 kB\n")
    assert memory_percent(tmp_path) == pytest.approx(75.0)


def test_this_machines_proc_reads() -> None:
    before = read_cpu_times()
    assert 0 <= cpu_percent(before, read_cpu_times()) <= 100
    assert 0 < memory_percent() < 100
