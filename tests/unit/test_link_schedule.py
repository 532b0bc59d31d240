"""The emulator's schedule: latency, jitter, bandwidth and stalls, in order, on simulated time."""

from __future__ import annotations

import random

import pytest

from meshmind.bus.protocol import LinkShape
from meshmind.lab._emulator import _Direction, delivery_time


def schedule(shape: LinkShape, reads: list[tuple[float, int]], seed: int = 0) -> list[float]:
    state, rng = _Direction(), random.Random(seed)
    return [delivery_time(at, size, shape, state, rng) for at, size in reads]


def test_a_clean_link_delivers_at_once() -> None:
    assert schedule(LinkShape(), [(1.0, 100), (2.0, 100)]) == [1.0, 2.0]


def test_delay_is_added_to_every_chunk() -> None:
    assert schedule(LinkShape(delay_ms=50), [(1.0, 10), (1.5, 10)]) == pytest.approx([1.05, 1.55])


def test_rate_serialises_chunks_back_to_back() -> None:
    shape = LinkShape(rate_bps=8_000)  # 1000 bytes per second
    assert schedule(shape, [(0.0, 500), (0.0, 500), (2.0, 100)]) == pytest.approx([0.5, 1.0, 2.1])


@pytest.mark.parametrize("seed", range(25))
def test_jitter_never_reorders_and_stays_within_its_bounds(seed: int) -> None:
    shape = LinkShape(delay_ms=40, jitter_ms=30)
    reads = [(i * 0.001, 100) for i in range(300)]
    times = schedule(shape, reads, seed)
    assert times == sorted(times), "TCP delivers in order"
    latencies = [t - at for t, (at, _) in zip(times, reads, strict=True)]
    assert min(latencies) >= 0.010 - 1e-9
    assert max(latencies) <= 0.070 + 0.030  # held back by at most the previous chunk's jitter


@pytest.mark.parametrize("seed", range(10))
def test_stalls_hit_about_their_share_of_chunks(seed: int) -> None:
    shape = LinkShape(stall_pct=10, stall_ms=200)
    reads = [(float(i), 10) for i in range(2000)]  # far apart: stalls do not pile up
    stalled = sum(
        t - at >= 0.2 for t, (at, _) in zip(schedule(shape, reads, seed), reads, strict=True)
    )
    assert 140 <= stalled <= 260


def test_a_stall_holds_back_what_follows_it() -> None:
    shape = LinkShape(stall_pct=100, stall_ms=200)
    first, second = schedule(shape, [(0.0, 10), (0.01, 10)])
    assert first == pytest.approx(0.2)
    assert second >= first
