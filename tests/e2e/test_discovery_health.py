"""discovery and health-monitor on a 5-host lab: convergence, failure detection, degraded,
cut and jittery links, and bad input to every endpoint and subscription."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest

from meshmind.bus import Bus, BusSettings, Empty
from meshmind.bus.protocol import (
    DISCOVERY_PEERS,
    DISCOVERY_PICK,
    HEALTH_LINKS,
    LINK_CHANGES,
    PEER_CHANGES,
    LinkChange,
    LinkShape,
    PeerChange,
    PeerQuery,
)
from meshmind.lab import LocalMesh, node_names
from tests.kit.labs import converged, observed_lab
from tests.kit.membership import convergence_lag_s, sees_everyone
from tests.kit.recorder import Recorder
from tests.kit.waiting import eventually, request_when_served

NODES = node_names(5)
PROBE_INTERVAL_S = 0.5
TTL_S = 3.0


@pytest.fixture
async def observed(tmp_path: Path) -> AsyncIterator[tuple[LocalMesh, Bus]]:
    env = {"PROBE_INTERVAL_S": str(PROBE_INTERVAL_S), "LOG_LEVEL": "info"}
    async with observed_lab(tmp_path / "lab", NODES, name="test", service_env=env) as pair:
        yield pair


async def all_links_good(
    lab: LocalMesh, hub: Bus
) -> tuple[Recorder[PeerChange], Recorder[LinkChange]]:
    """Start every host's services and wait until every host sees all five and has reported
    each of its links good. Link changes are recorded from before the first probe: a change is
    published once, so a recorder started later could miss the only one."""
    links = await Recorder.start(hub, LINK_CHANGES)
    changes = await converged(lab, hub)
    await eventually(lambda: _all_links_good(links), within=30)
    return changes, links


async def test_every_host_sees_every_other_within_a_second(lab: LocalMesh, hub: Bus) -> None:
    changes = await converged(lab, hub)

    lag = convergence_lag_s(changes, NODES)
    assert 0 < lag <= 1.0, f"converged {lag:.2f}s after the last discovery service started"
    views = [await hub.request(DISCOVERY_PEERS, PeerQuery(), node=n, timeout=5) for n in NODES]
    assert all([p.node for p in v.peers] == NODES and not v.stale for v in views)


async def test_killed_host_is_declared_left_by_every_other_within_the_ttl(
    lab: LocalMesh, hub: Bus
) -> None:
    changes = await converged(lab, hub)

    killed_at = time.monotonic()
    await lab.kill_services("n5")

    def left_everywhere() -> dict[str, float]:
        return {
            c.observer: at
            for at, c in changes.since(killed_at)
            if c.kind == "left" and c.node == "n5"
        }

    await eventually(lambda: set(left_everywhere()) == set(NODES[:4]), within=10)
    worst = max(left_everywhere().values()) - killed_at
    assert worst <= TTL_S, f"last 'left' {worst:.2f}s after the kill"
    assert not [c for _, c in changes.since(killed_at) if c.kind == "left" and c.node != "n5"]


async def link_states(links: Recorder[LinkChange], since: float, node: str) -> dict[str, str]:
    """The latest state of every link to or from ``node`` reported since ``since``."""
    latest: dict[str, str] = {}
    for _, change in links.since(since):
        link = change.link
        if node in (link.source, link.target):
            latest[f"{link.source}->{link.target}"] = link.state
    return latest


async def test_degraded_link_is_seen_within_three_probe_intervals_and_recovers(
    lab: LocalMesh, hub: Bus
) -> None:
    _, links = await all_links_good(lab, hub)

    degraded_at = time.monotonic()
    lab.host("n5").link.set_shape(LinkShape(delay_ms=150, stall_pct=5))

    expected = {f"n5->{n}" for n in NODES[:4]} | {f"{n}->n5" for n in NODES[:4]}

    async def all_degraded() -> bool:
        states = await link_states(links, degraded_at, "n5")
        return {k for k, v in states.items() if v == "degraded"} >= expected

    await eventually(all_degraded, within=10, every=0.02)
    detect = (
        max(at for at, c in links.since(degraded_at) if c.link.state == "degraded") - degraded_at
    )
    assert detect <= 3 * PROBE_INTERVAL_S + 0.3, f"degraded after {detect:.2f}s"

    restored_at = time.monotonic()
    lab.host("n5").link.restore()

    async def all_good_again() -> bool:
        states = await link_states(links, restored_at, "n5")
        return {k for k, v in states.items() if v == "good"} >= expected

    await eventually(all_good_again, within=15)


def _all_links_good(links: Recorder[LinkChange]) -> bool:
    latest = {(c.link.source, c.link.target): c.link.state for _, c in links.events}
    return len(latest) == 20 and set(latest.values()) == {"good"}


async def test_cut_drives_the_hosts_links_down_on_both_sides(lab: LocalMesh, hub: Bus) -> None:
    changes, links = await all_links_good(lab, hub)

    cut_at = time.monotonic()
    await lab.host("n4").link.cut()

    async def others_see_n4_down() -> bool:
        states = await link_states(links, cut_at, "n4")
        return all(states.get(f"{n}->n4") == "down" for n in ("n1", "n2", "n3", "n5"))

    await eventually(others_see_n4_down, within=15)
    local = await Bus.connect(BusSettings(node_id="n4", nats_url=lab.host("n4").url), name="t")
    try:

        async def n4_sees_everyone_down() -> bool:
            view = await local.request(HEALTH_LINKS, Empty(), node="n4", timeout=5)
            return {r.target for r in view.links if r.state == "down"} == {"n1", "n2", "n3", "n5"}

        await eventually(n4_sees_everyone_down, within=15)
        peers = await local.request(DISCOVERY_PEERS, PeerQuery(), node="n4", timeout=5)
        assert peers.stale, "a host cut off from the hub must mark its view stale"
        assert peers.age_s > 1.0
        assert [p.node for p in peers.peers] == NODES, "and keep answering from it"

        def others_saw_n4_leave() -> bool:  # links go down faster than membership: wait for both
            gone = {
                c.observer for _, c in changes.since(cut_at) if c.kind == "left" and c.node == "n4"
            }
            return gone >= {"n1", "n2", "n3", "n5"}

        await eventually(others_saw_n4_leave, within=15)
        restored_at = time.monotonic()
        lab.host("n4").link.restore()

        async def n4_fresh_and_whole() -> bool:
            view = await local.request(DISCOVERY_PEERS, PeerQuery(), node="n4", timeout=5)
            return not view.stale and [p.node for p in view.peers] == NODES

        await eventually(n4_fresh_and_whole, within=15)
        restored = await local.request(DISCOVERY_PEERS, PeerQuery(), node="n4", timeout=5)
        assert restored.age_s < 2.0

        def others_see_n4_again() -> bool:
            back = {
                c.observer
                for _, c in changes.since(restored_at)
                if c.kind == "joined" and c.node == "n4"
            }
            return back >= {"n1", "n2", "n3", "n5"}

        await eventually(others_see_n4_again, within=15)
    finally:
        await local.close()


async def test_jitter_alone_does_not_make_links_flap(lab: LocalMesh, hub: Bus) -> None:
    _, links = await all_links_good(lab, hub)

    jitter_at = time.monotonic()
    lab.host("n3").link.set_shape(LinkShape(jitter_ms=40))
    await eventually(
        lambda: time.monotonic() - jitter_at > 12 * PROBE_INTERVAL_S, every=0.1, within=30
    )

    moved = [c for _, c in links.since(jitter_at) if c.previous not in (None, c.link.state)]
    assert moved == [], [
        f"{c.link.source}->{c.link.target} {c.previous}->{c.link.state}" for c in moved
    ]


ENDPOINTS = [
    "mesh.discovery.n1.peers",
    "mesh.discovery.n1.pick",
    "mesh.health.n1.probe",
    "mesh.health.n1.links",
    "mesh.health.n1.host",
]


async def test_bad_input_to_every_endpoint_and_subscription(lab: LocalMesh, hub: Bus) -> None:
    await converged(lab, hub)
    await request_when_served(hub, HEALTH_LINKS, Empty(), node="n1", within=30)
    for subject in ENDPOINTS:
        for garbage in (b"\xc1", msgpack.packb({"v": 99}), msgpack.packb({"v": 1, "x": 1})):
            reply = await hub.request_raw(subject, garbage, timeout=5)
            error = reply.service_error
            assert error is not None, subject
            assert error.code in (400, 426), (subject, error)
    await hub.publish_raw("mesh.host.n1.beats", b"\x00garbage")
    await hub.publish_raw("mesh.host.n1.beats", msgpack.packb({"v": 1, "node": "n1"}))

    pick = await hub.request(DISCOVERY_PICK, PeerQuery(), node="n1", timeout=5)
    assert pick.peer is not None
    assert not pick.stale

    async def drops_counted() -> bool:
        replies = await hub.gather_raw("$SRV.STATS.meshmind-discovery", wait=0.3)
        for raw in replies:
            stats = json.loads(raw.data)
            if stats["metadata"]["node"] == "n1":
                data = stats["endpoints"][0]["data"]
                return bool(data["dropped_messages"].get("mesh.host.n1.beats") == 2)
        return False

    await eventually(drops_counted)


async def test_a_host_that_starts_cut_off_serves_a_stale_view_then_joins(
    lab: LocalMesh, hub: Bus
) -> None:
    await lab.host("n5").link.cut()
    changes = await Recorder.start(hub, PEER_CHANGES)
    await lab.start_services()
    local = await Bus.connect(BusSettings(node_id="n5", nats_url=lab.host("n5").url), name="t")
    try:
        view = await request_when_served(local, DISCOVERY_PEERS, PeerQuery(), node="n5", within=30)
        assert view.stale, "no hub yet: the view must say it is not confirmed"
        health = await request_when_served(local, HEALTH_LINKS, Empty(), node="n5", within=30)
        assert health.node == "n5"

        lab.host("n5").link.restore()

        await eventually(lambda: sees_everyone(changes, NODES), within=30)
        fresh = await local.request(DISCOVERY_PEERS, PeerQuery(), node="n5", timeout=5)
        assert not fresh.stale
        assert [p.node for p in fresh.peers] == NODES
    finally:
        await local.close()
