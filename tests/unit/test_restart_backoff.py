"""The wait before a failed background task runs again: doubling from 0.1 s, capped at 5 s,
reset after a minute of health."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshmind.bus import RestartBackoff


def test_quick_failures_double_the_wait_up_to_the_cap() -> None:
    backoff = RestartBackoff()
    waits = [backoff.after_failure(0.01) for _ in range(9)]
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]


def test_a_minute_of_health_resets_the_wait() -> None:
    backoff = RestartBackoff()
    for _ in range(6):
        backoff.after_failure(1.0)
    assert backoff.after_failure(59.9) == 5.0
    assert backoff.after_failure(60.0) == 0.1
    assert backoff.after_failure(0.5) == 0.2


@given(st.lists(st.floats(min_value=0, max_value=600, allow_nan=False), max_size=50))
def test_every_wait_is_between_first_and_cap_and_follows_the_rule(runs: list[float]) -> None:
    backoff = RestartBackoff()
    expected = 0.1
    for ran_for_s in runs:
        if ran_for_s >= 60.0:
            expected = 0.1
        wait = backoff.after_failure(ran_for_s)
        assert wait == expected
        assert 0.1 <= wait <= 5.0
        expected = min(5.0, expected * 2)
