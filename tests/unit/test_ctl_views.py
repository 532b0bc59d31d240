"""meshctl's peer and link views: table cells, natural order, state colours, JSON round trips."""

from __future__ import annotations

import re

import pytest
from rich.console import Console
from rich.table import Table
from rich.text import Text

from meshmind.bus.protocol import HostLoad, LinkReport, LinkState, PeerInfo, PeerList
from meshmind.ctl._views import (
    human_duration,
    link_matrix,
    links_json,
    links_table,
    natural_key,
    peers_json,
    peers_table,
)

NOW = 1_700_000_000.0
ANSI = {"green": "\x1b[32m", "yellow": "\x1b[33m", "red": "\x1b[31m", "dim": "\x1b[2m"}


def render(table: Table, *, styles: bool = False) -> str:
    console = Console(record=True, width=120, color_system="truecolor", force_terminal=True)
    console.print(table)
    return console.export_text(styles=styles)


def body_rows(text: str) -> list[list[str]]:
    """The cells of every body row of a rendered table (rows drawn between ``│`` bars)."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in text.splitlines()
        if line.startswith("│")
    ]


def rows_by(text: str, key_cells: int = 1) -> dict[tuple[str, ...], list[str]]:
    """Body rows keyed by their first ``key_cells`` cells."""
    return {tuple(row[:key_cells]): row[key_cells:] for row in body_rows(text)}


def peer(node: str, *, started_ago: float = 90.0, queues: dict[str, int] | None = None) -> PeerInfo:
    return PeerInfo(
        node=node,
        services=["meshmind-health", "meshmind-discovery"],
        capabilities=["train", "gpu"],
        load=HostLoad(cpu_pct=12.5, mem_pct=40.25, queues=queues or {}),
        version="0.1.0",
        started_at=NOW - started_ago,
    )


def view(*, stale: bool = False, age_s: float = 0.4) -> PeerList:
    peers = [
        peer("n10", started_ago=3 * 3600 + 4 * 60 + 5),
        peer("n2", queues={"health": 3, "trainer": 4}),
        peer("n1", started_ago=2 * 86_400 + 5 * 3600),
    ]
    return PeerList(observer="n1", peers=peers, stale=stale, age_s=age_s)


def link(
    source: str,
    target: str,
    state: LinkState = "good",
    score: float = 0.97,
    *,
    rtt_ms: float | None = 12.34,
    at: float = NOW,
) -> LinkReport:
    return LinkReport(
        source=source,
        target=target,
        state=state,
        score=score,
        delivery=0.985,
        rtt_ms=rtt_ms,
        jitter_ms=None if rtt_ms is None else 1.26,
        probes=42,
        at=at,
    )


LINKS = [
    link("n10", "n2", "down", 0.0, rtt_ms=None),
    link("n2", "n10", "degraded", 0.614),
    link("n1", "n2"),
    link("n2", "n1", score=0.9),
]


def column_cells(table: Table, header: str) -> list[object]:
    (column,) = (c for c in table.columns if c.header == header)
    return list(column.cells)


# --- natural order and durations ------------------------------------------------------------


def test_natural_key_orders_numbers_by_value() -> None:
    nodes = ["n10", "n2", "pi-kitchen", "n1", "N3", "n02"]
    assert sorted(nodes, key=natural_key) == ["n1", "n02", "n2", "N3", "n10", "pi-kitchen"]


def test_natural_key_handles_ids_without_digits_next_to_ids_with_them() -> None:
    assert sorted(["n1", "n", "1", "n1a"], key=natural_key) == ["1", "n", "n1", "n1a"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-5, "0s"), (0, "0s"), (45.9, "45s"), (723, "12m 3s"), (11045, "3h 4m"), (190_800, "2d 5h")],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


# --- peers --------------------------------------------------------------------------------------


def test_peers_table_shows_every_cell_in_natural_order() -> None:
    text = render(peers_table(view(), now=NOW))
    assert "peers seen by n1" in text
    assert "STALE" not in text
    for header in ("node", "services", "capabilities", "cpu %", "mem %", "queued", "up for"):
        assert header in text
    rows = body_rows(text)
    assert [row[0] for row in rows] == ["n1", "n2", "n10"]
    assert rows[1] == [
        "n2",
        "discovery, health",
        "gpu, train",
        "12.5",
        "40.2",
        "7",
        "0.1.0",
        "1m 30s",
    ]
    assert [row[-1] for row in rows] == ["2d 5h", "1m 30s", "3h 4m"]
    assert "meshmind-" not in text


def test_peers_table_marks_a_stale_view_in_yellow() -> None:
    table = peers_table(view(stale=True, age_s=12.345), now=NOW)
    assert "peers seen by n1 (STALE, 12.3s old)" in render(table)
    assert isinstance(table.title, Text)
    (span,) = table.title.spans
    assert table.title.plain[span.start : span.end] == " (STALE, 12.3s old)"
    assert span.style == "yellow"
    assert ANSI["yellow"] + " (STALE, 12.3s old)" in render(table, styles=True)


def test_peers_table_uptime_defaults_to_now() -> None:
    fresh = PeerList(observer="n1", peers=[peer("n1", started_ago=-NOW)], stale=False, age_s=0)
    (row,) = body_rows(render(peers_table(fresh)))
    assert row[-1] == "0s"


def test_peers_json_round_trips_in_natural_order() -> None:
    original = view(stale=True, age_s=3.5)
    data = peers_json(original)
    assert [p["node"] for p in data["peers"]] == ["n1", "n2", "n10"]
    assert data["stale"] is True
    assert data["peers"][1]["load"]["queues"] == {"health": 3, "trainer": 4}
    back = PeerList.model_validate(data)
    assert back.model_copy(update={"peers": original.peers}) == original
    assert sorted(back.peers, key=lambda p: p.node) == sorted(original.peers, key=lambda p: p.node)


# --- links --------------------------------------------------------------------------------------


def test_links_table_rows_sorted_by_source_then_target() -> None:
    text = render(links_table(LINKS))
    assert "4 link(s)" in text
    pairs = [(row[0], row[1]) for row in body_rows(text)]
    assert pairs == [("n1", "n2"), ("n2", "n1"), ("n2", "n10"), ("n10", "n2")]


def test_links_table_formats_every_cell() -> None:
    rows = rows_by(render(links_table(LINKS)), 2)
    assert rows["n1", "n2"] == ["good", "0.97", "98.5", "12.3", "1.3", "42"]
    assert rows["n2", "n10"] == ["degraded", "0.61", "98.5", "12.3", "1.3", "42"]
    assert rows["n10", "n2"] == ["down", "0.00", "98.5", "-", "-", "42"]


def test_links_table_colours_states() -> None:
    table = links_table(LINKS)
    states = column_cells(table, "state")
    assert [(c.plain, c.style) for c in states if isinstance(c, Text)] == [
        ("good", "green"),
        ("good", "green"),
        ("degraded", "yellow"),
        ("down", "red"),
    ]
    styled = render(table, styles=True)
    assert ANSI["green"] + "good" in styled
    assert ANSI["yellow"] + "degraded" in styled
    assert ANSI["red"] + "down" in styled


def test_links_keep_only_the_latest_report_of_a_link() -> None:
    old = link("n1", "n2", "down", 0.1, at=NOW - 60)
    rows = body_rows(render(links_table([old, *LINKS])))
    assert [row[2] for row in rows if row[:2] == ["n1", "n2"]] == ["good"]
    assert [row["state"] for row in links_json([old, *LINKS]) if row["source"] == "n1"] == ["good"]


def test_links_json_round_trips_in_natural_order() -> None:
    data = links_json(LINKS)
    assert [(d["source"], d["target"]) for d in data] == [
        ("n1", "n2"),
        ("n2", "n1"),
        ("n2", "n10"),
        ("n10", "n2"),
    ]
    assert data[3]["rtt_ms"] is None
    assert {LinkReport.model_validate(d) for d in data} == set(LINKS)


# --- the link matrix ----------------------------------------------------------------------------


def matrix_rows(text: str) -> dict[str, list[str]]:
    return {key: cells for (key,), cells in rows_by(text).items()}


def header_cells(text: str) -> list[str]:
    (line,) = (line for line in text.splitlines() if line.startswith("┃"))
    return [cell.strip() for cell in line.strip("┃").split("┃")]


def test_link_matrix_cells() -> None:
    text = render(link_matrix(LINKS))
    assert "link quality (row -> column)" in text
    assert header_cells(text) == ["", "n1", "n2", "n10"]
    assert matrix_rows(text) == {
        "n1": ["·", "0.97", "?"],
        "n2": ["0.90", "·", "0.61"],
        "n10": ["?", "0.00", "·"],
    }
    assert list(matrix_rows(text)) == ["n1", "n2", "n10"]


def test_link_matrix_colours_cells_by_state() -> None:
    table = link_matrix(LINKS)
    n10 = [c for c in column_cells(table, "n10") if isinstance(c, Text)]
    assert [(c.plain, c.style) for c in n10] == [("?", "dim"), ("0.61", "yellow"), ("·", "dim")]
    n2 = [c for c in column_cells(table, "n2") if isinstance(c, Text)]
    assert [(c.plain, c.style) for c in n2] == [("0.97", "green"), ("·", "dim"), ("0.00", "red")]
    styled = render(table, styles=True)
    assert ANSI["green"] + "0.97" in styled
    assert ANSI["yellow"] + "0.61" in styled
    assert ANSI["red"] + "0.00" in styled
    assert re.search(re.escape(ANSI["dim"]) + r" *\? *" + re.escape("\x1b[0m"), styled)
    assert re.search(re.escape(ANSI["dim"]) + r" *· *" + re.escape("\x1b[0m"), styled)


def test_link_matrix_follows_given_nodes() -> None:
    text = render(link_matrix(LINKS, nodes=["n3", "n1", "n2", "n1"]))
    rows = matrix_rows(text)
    assert header_cells(text) == ["", "n3", "n1", "n2"]
    assert list(rows) == ["n3", "n1", "n2"]
    assert rows["n3"] == ["·", "?", "?"]
    assert rows["n1"] == ["?", "·", "0.97"]
    assert "n10" not in text


def test_link_matrix_of_no_links_keeps_its_title_on_one_line() -> None:
    text = render(link_matrix([]))
    assert "link quality (row -> column)" in text
    assert body_rows(text) == []
