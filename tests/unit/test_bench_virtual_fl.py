"""The benchmark's virtual-clock replay of a link-aware job keeps the coordinator's pace."""

from __future__ import annotations

import pytest
from bench._virtual_fl import PairOutcome, Timing, buffered_timeline, time_to

from meshmind.bus.protocol import FlJobSpec
from meshmind.federation import HostData
from meshmind.fl import TaskSession


def job(versions: int) -> FlJobSpec:
    return FlJobSpec(
        rounds=versions,
        epochs=1,
        weighting="link",
        mode="buffered",
        buffer_size=3,
        max_staleness=20,
        remember=True,
    )


@pytest.fixture(scope="module")
def sessions() -> list[TaskSession]:
    return [TaskSession("digits", 0, HostData(i, 5)) for i in range(5)]


def test_hosts_slower_than_the_job_never_count_and_the_rest_make_a_version_a_cycle(
    sessions: list[TaskSession],
) -> None:
    timing = Timing(fast_cycle_s=0.1, slow_cycle_s=100.0, slow_link_quality=0.2)
    timeline = buffered_timeline(sessions, {3, 4}, timing, job(4))

    assert [round(at, 6) for at, _ in timeline] == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_a_buffer_the_fast_hosts_cannot_fill_waits_for_the_slow_ones(
    sessions: list[TaskSession],
) -> None:
    timing = Timing(fast_cycle_s=0.1, slow_cycle_s=0.75, slow_link_quality=0.2)
    timeline = buffered_timeline(
        sessions,
        {2, 3, 4},
        timing,
        job(2),
    )

    # the fast hosts' updates of 0.1 s wait in the buffer, and they for the next version,
    # until the slow ones land at 0.75 s; two of those wait with the fast hosts' next
    assert [round(at, 6) for at, _ in timeline] == [0.0, 0.75, 0.85]


def test_a_pair_that_never_reaches_the_target_counts_as_infinitely_slow() -> None:
    assert PairOutcome((3, 4), None, 0.85).ratio(1.7) == float("inf")
    assert PairOutcome((0, 1), 0.85, 0.9).ratio(1.7) == pytest.approx(0.5)
    assert time_to([(0.0, 0.8), (0.5, 0.9), (1.0, 0.95)], 0.9) == 0.5
    assert time_to([(0.0, 0.8)], 0.9) is None
