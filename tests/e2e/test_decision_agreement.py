"""Agreement on a 5-host lab: a mesh-wide sweep; bad input; a host cut off from the others
cannot get a healthy host acted upon; every host deciding one anomaly at once commits it once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from meshmind.bus import Bus, BusSettings, ServiceError, encode
from meshmind.bus.protocol import (
    DECISION_DECIDE,
    DECISION_HISTORY,
    DECISION_SWEEP,
    DISCOVERY_PEERS,
    DecideRequest,
    DecisionHistoryQuery,
    PeerQuery,
    SweepRequest,
    SweepWork,
)
from meshmind.decision import ACTS_ON_HOST
from meshmind.lab import node_names
from tests.kit.decision import DecisionLab, decision_lab
from tests.kit.waiting import eventually

NODES = node_names(5)
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def lab(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DecisionLab]:
    async with decision_lab(tmp_path_factory.mktemp("decision") / "lab", NODES) as running:
        yield running


@pytest.mark.timeout(500)
async def test_a_sweep_reaches_every_host_and_ends_once_all_are_done(lab: DecisionLab) -> None:
    result = await lab.hub.request(
        DECISION_SWEEP, SweepRequest(timeout_ms=20_000), node="n2", timeout=25
    )

    assert [r.node for r in result.reports] == NODES
    assert [r.node for r in result.reports if r.parent is None] == ["n2"]
    assert all(r.parent in NODES for r in result.reports if r.node != "n2")
    assert result.messages >= len(NODES) - 1  # the initiator's work to each other host


@pytest.mark.timeout(120)
async def test_bad_input_gets_a_clear_error_or_is_dropped_and_counted(lab: DecisionLab) -> None:
    for subject in ("mesh.decision.n1.decide", "mesh.decision.n1.vote", "mesh.decision.n1.sweep"):
        reply = await lab.hub.request_raw(subject, b"\x01not msgpack", timeout=5)
        assert reply.service_error is not None
        assert reply.service_error.code == 400
    with pytest.raises(ServiceError) as refused:
        await lab.hub.request(
            DECISION_DECIDE, DecideRequest(kind="host-gone", subject="n2", timeout_ms=10), node="n1"
        )
    assert refused.value.code in (409, 504)

    n4 = await Bus.connect(BusSettings(node_id="n4", nats_url=lab.mesh.host("n4").url), name="t")
    try:  # a work message from n4 whose payload claims another sender
        forged = SweepWork(computation="forged", sender="n2", recipient="n1", msg_id=1)
        await n4.publish_raw("mesh.sweep.n4.work.n1", encode(forged))
        await n4.flush()
    finally:
        await n4.close()

    async def counted() -> bool:
        replies = await lab.hub.gather_raw("$SRV.STATS.meshmind-decision", wait=0.5)
        for reply in replies:
            stats = json.loads(reply.data)
            for endpoint in stats.get("endpoints") or []:
                dropped = (endpoint.get("data") or {}).get("dropped_messages") or {}
                if dropped.get("mesh.sweep.*.work.n1", 0) >= 1:
                    return True
        return False

    await eventually(counted, within=10, every=0.5)


async def _cut_host_cannot_act_on_healthy_hosts(lab: DecisionLab, mode: str) -> None:
    await lab.mesh.host("n3").link.cut(mode)  # type: ignore[arg-type]
    n3 = await Bus.connect(BusSettings(node_id="n3", nats_url=lab.mesh.host("n3").url), name="t")
    try:
        await asyncio.sleep(8)  # the cut is noticed: links down in n3's view, n3 gone in others'
        for target in ("n1", "n2"):
            with pytest.raises(ServiceError) as refused:
                await n3.request(
                    DECISION_DECIDE,
                    DecideRequest(kind="host-gone", subject=target, timeout_ms=4000),
                    node="n3",
                    timeout=10,
                )
            assert refused.value.code in (409, 503, 504)
        await asyncio.sleep(5)
    finally:
        await n3.close()
        lab.mesh.host("n3").link.restore()

    async def n3_back() -> bool:
        peers = await lab.hub.request(DISCOVERY_PEERS, PeerQuery(), node="n1")
        return "n3" in {p.node for p in peers.peers}

    await eventually(n3_back, within=60, every=0.5)
    history = await lab.hub.request(DECISION_HISTORY, DecisionHistoryQuery(), node="n1", timeout=15)
    acted = [d for d in history.decisions if d.action in ACTS_ON_HOST and d.target != "n3"]
    assert acted == [], [d.key for d in acted]
    assert not [
        e for e in lab.committed() if e.record.target != "n3" and e.record.action in ACTS_ON_HOST
    ]


@pytest.mark.timeout(300)
async def test_a_silently_cut_host_cannot_get_a_healthy_host_acted_upon(lab: DecisionLab) -> None:
    await _cut_host_cannot_act_on_healthy_hosts(lab, "silent")


@pytest.mark.timeout(300)
async def test_a_loudly_cut_host_cannot_get_a_healthy_host_acted_upon(lab: DecisionLab) -> None:
    await _cut_host_cannot_act_on_healthy_hosts(lab, "loud")


@pytest.mark.timeout(300)
async def test_every_host_deciding_the_same_anomaly_at_once_commits_it_once(
    lab: DecisionLab,
) -> None:
    peers = await lab.hub.request(DISCOVERY_PEERS, PeerQuery(), node="n1")
    [n5] = [p for p in peers.peers if p.node == "n5"]
    episode = f"{n5.started_at:.6f}"
    key = f"host-gone/n5/{episode}"
    await lab.mesh.kill_services("n5")

    request = DecideRequest(kind="host-gone", subject="n5", episode=episode, timeout_ms=30_000)
    records = await asyncio.gather(
        *(lab.hub.request(DECISION_DECIDE, request, node=node, timeout=35) for node in NODES[:4])
    )

    assert {r.key for r in records} == {key}
    assert len({r.model_dump_json(exclude={"seq"}) for r in records}) == 1  # the same decision
    await eventually(lambda: lab.of_kind("executed", key), within=60)
    await asyncio.sleep(3)
    assert len(lab.committed(key)) == 1
    assert len(lab.of_kind("executed", key)) == 1
    history = await lab.hub.request(DECISION_HISTORY, DecisionHistoryQuery(), node="n2", timeout=15)
    assert [d.key for d in history.decisions].count(key) == 1
