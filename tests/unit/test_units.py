"""The units meshctl reads: durations, rates, percentages."""

from __future__ import annotations

import pytest

from meshmind.ctl._units import parse_duration_ms, parse_percent, parse_rate_bps


@pytest.mark.parametrize(
    ("text", "ms"), [("80ms", 80), ("1.5s", 1500), ("250us", 0.25), ("20", 20), (" 0ms ", 0)]
)
def test_durations(text: str, ms: float) -> None:
    assert parse_duration_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("1mbit", 1_000_000),
        ("500kbit", 500_000),
        ("2mbps", 16_000_000),
        ("9600", 9600),
        ("1Gbit", 10**9),
    ],
)
def test_rates(text: str, bps: int) -> None:
    assert parse_rate_bps(text) == bps


@pytest.mark.parametrize(("text", "pct"), [("5%", 5), ("0.5", 0.5), ("100%", 100)])
def test_percentages(text: str, pct: float) -> None:
    assert parse_percent(text) == pct


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (parse_duration_ms, "fast"),
        (parse_duration_ms, "-1ms"),
        (parse_rate_bps, "0mbit"),
        (parse_rate_bps, "1 GB"),
        (parse_percent, "101%"),
        (parse_percent, "x"),
    ],
)
def test_nonsense_is_refused_with_a_hint(parse: object, text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a|above zero"):
        parse(text)  # type: ignore[operator]
