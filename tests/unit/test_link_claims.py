"""What stored link reports and probe replies claim, checked against their key, clock and probe."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshmind.bus.protocol import LinkReport, LinkState, Probe, ProbeReply
from meshmind.health import (
    CLOCK_SKEW_S,
    MISSED_REFRESHES,
    check_reports,
    link_key,
    links_ttl_s,
    reply_mismatch,
)

NOW = 1_800_000_000.0


def report(
    source: str, target: str, at: float = NOW - 1.0, state: LinkState = "good"
) -> LinkReport:
    return LinkReport(
        source=source,
        target=target,
        state=state,
        score=1.0,
        delivery=1.0,
        rtt_ms=2.0,
        jitter_ms=1.0,
        probes=10,
        at=at,
    )


def test_reports_that_match_their_key_and_clock_are_all_believed() -> None:
    stored = {"n1.n2": report("n1", "n2"), "n2.n1": report("n2", "n1", at=NOW + CLOCK_SKEW_S)}
    checked = check_reports(stored, NOW)
    assert checked.accepted == [stored["n1.n2"], stored["n2.n1"]]
    assert checked.refused == {}


def test_a_report_claiming_another_link_than_its_key_is_refused_and_named() -> None:
    real = report("n1", "n3")
    forged = report("n1", "n3", at=4102444800.0, state="down")
    checked = check_reports({"n1.n3": real, "n2.x": forged}, NOW)
    assert checked.accepted == [real]
    assert list(checked.refused) == ["n2.x"]
    assert "n1->n3" in checked.refused["n2.x"]


def test_a_report_dated_in_the_future_is_refused_even_under_its_own_key() -> None:
    checked = check_reports({"n1.n3": report("n1", "n3", at=NOW + CLOCK_SKEW_S + 1)}, NOW)
    assert checked.accepted == []
    assert "future" in checked.refused["n1.n3"]


@given(
    ahead_s=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    swapped=st.booleans(),
)
def test_a_report_is_believed_exactly_when_key_and_clock_agree(
    ahead_s: float, swapped: bool
) -> None:
    key = "n2.n1" if swapped else "n1.n2"
    checked = check_reports({key: report("n1", "n2", at=NOW + ahead_s)}, NOW)
    believed = not swapped and ahead_s <= CLOCK_SKEW_S
    assert bool(checked.accepted) == believed
    assert bool(checked.refused) != believed


def test_link_key_is_source_dot_target() -> None:
    assert link_key("n1", "n2") == "n1.n2"


def test_a_reply_must_come_from_the_probed_peer_and_answer_this_probe() -> None:
    probe = Probe(origin="n1", seq=41)
    assert reply_mismatch("n2", probe, ProbeReply(node="n2", seq=41)) is None
    wrong_seq = reply_mismatch("n2", probe, ProbeReply(node="n2", seq=40))
    wrong_node = reply_mismatch("n2", probe, ProbeReply(node="n3", seq=41))
    assert wrong_seq is not None
    assert "40" in wrong_seq
    assert wrong_node is not None
    assert "n3" in wrong_node


@given(
    report_every_s=st.floats(min_value=0.01, max_value=3600),
    store_timeout_s=st.floats(min_value=0.01, max_value=600),
)
def test_links_outlive_missed_refreshes_and_a_slow_put(
    report_every_s: float, store_timeout_s: float
) -> None:
    ttl = links_ttl_s(report_every_s, store_timeout_s)
    assert ttl > MISSED_REFRESHES * report_every_s + store_timeout_s
    assert ttl > report_every_s


def test_links_ttl_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        links_ttl_s(0.0, 10.0)
