"""Self-healing on a 5-host lab: a host whose services die is healed by one agreed decision,
executed once, and the outcome is learnt."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshmind.bus.protocol import (
    CONSENSUS_GET,
    DECISION_HISTORY,
    DISCOVERY_PEERS,
    DecisionHistoryQuery,
    KvKey,
    PeerQuery,
)
from meshmind.lab import node_names
from tests.kit.decision import DecisionLab, decision_lab
from tests.kit.waiting import eventually

NODES = node_names(5)


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[DecisionLab]:
    async with decision_lab(tmp_path / "lab", NODES) as running:
        yield running


@pytest.mark.timeout(300)
async def test_killed_services_are_healed_by_one_decision_executed_once(lab: DecisionLab) -> None:
    await lab.mesh.kill_services("n3")

    await eventually(lambda: lab.of_kind("outcome", "host-gone/n3/"), within=90)

    [committed] = lab.committed("host-gone/n3/")
    record = committed.record
    assert record.action == "restart-services"
    assert record.target == "n3"
    assert sum(v.approve for v in record.votes) >= record.quorum == 3
    assert record.executor == committed.node
    [executed] = lab.of_kind("executed", "host-gone/n3/")
    assert executed.node == record.executor
    assert executed.record.executed is not None
    assert "lab restarted the services of n3" in executed.record.executed
    [outcome] = lab.of_kind("outcome", "host-gone/n3/")
    assert outcome.record.outcome == "cleared"

    peers = await lab.hub.request(DISCOVERY_PEERS, PeerQuery(), node="n1")
    assert "n3" in {p.node for p in peers.peers}  # the host rejoined

    history = await lab.hub.request(DECISION_HISTORY, DecisionHistoryQuery(), node="n5")
    [decided] = [d for d in history.decisions if d.key == record.key]
    assert decided.outcome == "cleared"
    assert decided.seq == record.seq
    assert any("left" in e.what for e in decided.anomaly.evidence)

    stored = await lab.hub.request(CONSENSUS_GET, KvKey(key="decision/knowledge"), node="n2")
    assert stored.value is not None
    assert json.loads(stored.value)["host-gone"]["restart-services"] == [1, 1]
