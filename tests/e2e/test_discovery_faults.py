"""discovery under real mesh faults: the hub losing the watch consumers, slow links, a restart
over a slow link, two instances with one node id, and records that disagree with their key."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshmind.bus import Bus
from meshmind.bus.protocol import (
    DISCOVERY_PEERS,
    PEERS_BUCKET,
    HostLoad,
    LinkShape,
    PeerChange,
    PeerInfo,
    PeerQuery,
)
from meshmind.lab import LocalMesh, ManagedProcess, ServiceCommand, node_names
from tests.kit.hub_consumers import delete_consumers
from tests.kit.labs import converged, observed_lab
from tests.kit.recorder import Recorder
from tests.kit.waiting import eventually, request_when_served

DISCOVERY = ServiceCommand("meshmind_discovery", [sys.executable, "-m", "meshmind_discovery"])
NODES = node_names(4)
STREAM = f"KV_{PEERS_BUCKET}"
TTL_S = 3.0


@pytest.fixture
async def observed(tmp_path: Path) -> AsyncIterator[tuple[LocalMesh, Bus]]:
    async with observed_lab(tmp_path / "lab", NODES, name="test", services=[DISCOVERY]) as pair:
        yield pair


def kinds(changes: Recorder[PeerChange], since: float, kind: str) -> list[str]:
    return [f"{c.observer}: {c.node}" for _, c in changes.since(since) if c.kind == kind]


async def views_fresh_and_whole(hub: Bus) -> bool:
    for node in NODES:
        view = await request_when_served(hub, DISCOVERY_PEERS, PeerQuery(), node=node)
        if view.stale or [p.node for p in view.peers] != NODES:
            return False
    return True


async def test_losing_the_watch_consumers_declares_nobody_left(lab: LocalMesh, hub: Bus) -> None:
    changes = await converged(lab, hub)
    lost_at = time.monotonic()

    for _ in range(3):
        assert await delete_consumers(hub, STREAM) >= len(NODES)
        await asyncio.sleep(4.0)
    await eventually(lambda: views_fresh_and_whole(hub), within=15)
    await asyncio.sleep(TTL_S)

    assert kinds(changes, lost_at, "left") == []
    assert kinds(changes, lost_at, "joined") == []


async def test_a_host_behind_a_slow_link_joins(lab: LocalMesh, hub: Bus) -> None:
    lab.host("n4").link.set_shape(LinkShape(delay_ms=250))
    changes = await converged(lab, hub)
    settled_at = time.monotonic()

    await eventually(lambda: views_fresh_and_whole(hub), within=20)
    await asyncio.sleep(TTL_S)

    assert kinds(changes, 0, "left") == []
    assert kinds(changes, settled_at, "joined") == []


async def test_a_restart_over_a_slow_link_is_one_departure_and_one_return(
    lab: LocalMesh, hub: Bus
) -> None:
    lab.host("n2").link.set_shape(LinkShape(delay_ms=200))
    changes = await converged(lab, hub)
    restarted_at = time.monotonic()

    await lab.restart("n2")

    async def new_n2_everywhere() -> bool:
        views = [
            await request_when_served(hub, DISCOVERY_PEERS, PeerQuery(), node=n) for n in NODES
        ]
        started = {p.started_at for v in views for p in v.peers if p.node == "n2"}
        return len(started) == 1 and started != before and all(not v.stale for v in views)

    view = await hub.request(DISCOVERY_PEERS, PeerQuery(), node="n1", timeout=5)
    before = {p.started_at for p in view.peers if p.node == "n2"}
    await eventually(new_n2_everywhere, within=30)
    await eventually(lambda: views_fresh_and_whole(hub), within=20)
    await asyncio.sleep(2 * TTL_S)

    for observer in set(NODES) - {"n2"}:
        seen = [
            c.kind
            for _, c in changes.since(restarted_at)
            if c.observer == observer and c.node == "n2" and c.kind != "updated"
        ]
        assert seen in (["left", "joined"], []), f"{observer} saw n2 {seen}"
    assert [n for n in kinds(changes, restarted_at, "left") if not n.endswith(": n2")] == []


async def test_two_instances_of_one_node_id_are_reported_and_never_evict_each_other(
    lab: LocalMesh, hub: Bus, tmp_path: Path
) -> None:
    changes = await converged(lab, hub)
    log = tmp_path / "second-n2.log"
    second = ManagedProcess(
        "second-n2",
        DISCOVERY.argv,
        log_path=log,
        env={"NODE_ID": "n2", "NATS_URL": lab.host("n2").url, "LOG_FORMAT": "json"},
    )
    duplicated_at = time.monotonic()
    await second.start()
    try:

        async def reported_everywhere() -> bool:
            for node in NODES:
                view = await hub.request(DISCOVERY_PEERS, PeerQuery(), node=node, timeout=5)
                if len(view.duplicates.get("n2", [])) != 2:
                    return False
            return True

        await eventually(reported_everywhere, within=30)
        await asyncio.sleep(2.0)
    finally:
        stopped_at = time.monotonic()
        await second.stop()
    await asyncio.sleep(2 * TTL_S)

    errors = [json.loads(line) for line in log.read_text().splitlines() if "duplicate_id" in line]
    assert errors, "the second instance must say loudly that n2 is taken"
    assert errors[0]["level"] == "error"
    assert errors[0]["instance"] != errors[0]["other_instance"]
    assert kinds(changes, stopped_at, "left") == [], "the live n2 was announced left"
    assert kinds(changes, duplicated_at, "left") == []
    updates = kinds(changes, duplicated_at, "updated")
    assert len(updates) <= 2 * len(NODES), f"the key flapped: {len(updates)} updates"
    view = await hub.request(DISCOVERY_PEERS, PeerQuery(), node="n1", timeout=5)
    assert "n2" in [p.node for p in view.peers]


async def test_records_that_disagree_with_their_key_or_the_clock_are_refused(
    lab: LocalMesh, hub: Bus
) -> None:
    changes = await converged(lab, hub)
    forged_at = time.monotonic()
    bucket = await hub.hub().key_value(PEERS_BUCKET, PeerInfo, create=False)

    def forged(node: str, started_at: float) -> PeerInfo:
        load = HostLoad(cpu_pct=0, mem_pct=0, queues={})
        return PeerInfo(
            node=node, services=[], capabilities=[], load=load, version="0", started_at=started_at
        )

    for _ in range(3):
        await bucket.put("n9", forged("n1", time.time()))
        await bucket.put("n8", forged("n8", time.time() + 3600))
        await asyncio.sleep(0.5)

    async def refused_everywhere() -> bool:
        for node in NODES:
            view = await request_when_served(hub, DISCOVERY_PEERS, PeerQuery(), node=node)
            if view.refused < 2 or {p.node for p in view.peers} != set(NODES):
                return False
        return True

    await eventually(refused_everywhere, within=15)
    assert kinds(changes, forged_at, "joined") == []
    assert kinds(changes, forged_at, "updated") == []
