"""Which peers a monitor probes, and the link table built from probe results."""

from __future__ import annotations

from collections import Counter

import pytest

from meshmind.health import LinkTable, ProbeRotation


def test_rotation_bounds_the_probes_per_interval_and_covers_every_peer() -> None:
    rotation = ProbeRotation(fanout=3)
    peers = [f"n{i}" for i in range(2, 12)]
    rotation.update(peers)
    probed: Counter[str] = Counter()
    for _ in range(10):
        batch = rotation.next_batch()
        assert len(batch) == 3
        probed.update(batch)
    assert set(probed) == set(peers)
    assert max(probed.values()) - min(probed.values()) <= 1, "fair share"


def test_small_meshes_probe_everyone_every_interval() -> None:
    rotation = ProbeRotation(fanout=8)
    rotation.update(["n2", "n3"])
    assert sorted(rotation.next_batch()) == ["n2", "n3"]
    assert sorted(rotation.next_batch()) == ["n2", "n3"]


def test_rotation_follows_the_peer_set() -> None:
    rotation = ProbeRotation(fanout=2)
    rotation.update(["a", "b", "c"])
    rotation.update(["b", "c", "d"])
    seen = {p for _ in range(4) for p in rotation.next_batch()}
    assert seen == {"b", "c", "d"}
    with pytest.raises(ValueError, match="at least 1"):
        ProbeRotation(0)


def test_link_table_reports_the_first_result_and_state_changes_only() -> None:
    table = LinkTable("n1")
    first = table.record("n2", 2.0, at=1.0)
    assert first is not None
    assert (first.previous, first.link.state, first.link.source) == (None, "good", "n1")
    assert table.record("n2", 2.1, at=2.0) is None
    changes = [table.record("n2", None, at=3.0 + i) for i in range(3)]
    last = changes[-1]
    assert last is not None
    assert (last.previous, last.link.state) == ("degraded", "down"), "a lost probe halves delivery"
    assert table.worst_state() == "down"
    assert [r.target for r in table.reports()] == ["n2"]
    table.forget("n2")
    assert table.reports() == []
    assert table.worst_state() == "good"
