"""Rates and failure ratios between two interface samples, counter resets included."""

from __future__ import annotations

import dataclasses

import pytest

from meshmind.health import InterfaceSample, rates


def sample(
    at: float,
    *,
    rx_bytes: int = 0,
    tx_bytes: int = 0,
    rx_packets: int = 0,
    tx_packets: int = 0,
    rx_errors: int = 0,
    tx_errors: int = 0,
    rx_dropped: int = 0,
    tx_dropped: int = 0,
) -> InterfaceSample:
    return InterfaceSample(
        name="mesh0",
        index=4,
        oper_state="UP",
        admin_up=True,
        carrier=True,
        mtu=1500,
        rx_bytes=rx_bytes,
        tx_bytes=tx_bytes,
        rx_packets=rx_packets,
        tx_packets=tx_packets,
        rx_errors=rx_errors,
        tx_errors=tx_errors,
        rx_dropped=rx_dropped,
        tx_dropped=tx_dropped,
        at=at,
    )


def test_rates_over_the_interval() -> None:
    before = sample(10.0, rx_bytes=1_000, tx_bytes=2_000, rx_packets=10, tx_packets=20)
    after = sample(12.0, rx_bytes=5_000, tx_bytes=2_600, rx_packets=50, tx_packets=26)

    got = rates(before, after)

    assert got.interval_s == 2.0
    assert (got.rx_bytes_per_s, got.tx_bytes_per_s) == (2_000.0, 300.0)
    assert (got.rx_packets_per_s, got.tx_packets_per_s) == (20.0, 3.0)
    assert (got.rx_error_ratio, got.tx_error_ratio) == (0.0, 0.0)
    assert not got.reset


def test_error_and_drop_ratios_are_shares_of_the_interval_frames() -> None:
    before = sample(0.0, rx_packets=100, rx_errors=5, tx_packets=100, tx_dropped=1)
    after = sample(1.0, rx_packets=190, rx_errors=15, tx_packets=103, tx_dropped=2)

    got = rates(before, after)

    assert got.rx_error_ratio == pytest.approx(10 / 100)
    assert got.tx_drop_ratio == pytest.approx(1 / 4)
    assert (got.tx_error_ratio, got.rx_drop_ratio) == (0.0, 0.0)


def test_ratios_are_zero_without_frames_and_one_when_all_failed() -> None:
    idle = rates(sample(0.0, rx_packets=7), sample(1.0, rx_packets=7))
    broken = rates(sample(0.0, rx_errors=3), sample(1.0, rx_errors=9))

    assert (idle.rx_error_ratio, idle.rx_drop_ratio, idle.rx_packets_per_s) == (0.0, 0.0, 0.0)
    assert broken.rx_error_ratio == 1.0


def test_counter_that_went_backwards_restarts_from_zero() -> None:
    before = sample(0.0, rx_bytes=2**32 - 100, tx_bytes=500, rx_packets=1_000)
    after = sample(2.0, rx_bytes=300, tx_bytes=900, rx_packets=1_010)

    got = rates(before, after)

    assert got.reset
    assert got.rx_bytes_per_s == 150.0
    assert got.tx_bytes_per_s == 200.0
    assert got.rx_packets_per_s == 5.0


def test_recreated_interface_counts_everything_from_zero() -> None:
    before = sample(0.0, rx_bytes=1_000, rx_packets=10)
    after = dataclasses.replace(sample(1.0, rx_bytes=4_000, rx_packets=40), index=9)

    got = rates(before, after)

    assert got.reset
    assert (got.rx_bytes_per_s, got.rx_packets_per_s) == (4_000.0, 40.0)


def test_samples_must_be_of_one_interface_in_time_order() -> None:
    with pytest.raises(ValueError, match="different interfaces"):
        rates(sample(0.0), dataclasses.replace(sample(1.0), name="mesh1"))
    with pytest.raises(ValueError, match="not later"):
        rates(sample(1.0), sample(1.0))


@pytest.mark.parametrize(
    ("oper_state", "admin_up", "up"),
    [
        ("UP", True, True),
        ("UNKNOWN", True, True),
        ("UP", False, False),
        ("DOWN", False, False),
        ("LOWERLAYERDOWN", True, False),
        ("DORMANT", True, False),
    ],
)
def test_up(oper_state: str, admin_up: bool, up: bool) -> None:
    state = dataclasses.replace(sample(0.0), oper_state=oper_state, admin_up=admin_up)
    assert state.up is up
