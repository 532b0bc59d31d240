"""Pure views of the mesh for meshctl: peers and links as rich tables, or as plain JSON data."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from meshmind.bus.protocol import LinkReport, LinkState, PeerInfo, PeerList

NaturalKey = tuple[tuple[str | int, ...], str]

STATE_STYLES: dict[LinkState, str] = {"good": "green", "degraded": "yellow", "down": "red"}
STALE_STYLE = "yellow"
MISSING_STYLE = "dim"
DIAGONAL = "·"
MISSING = "?"
SERVICE_PREFIX = "meshmind-"
MATRIX_TITLE = "link quality (row -> column)"

_DIGITS = re.compile(r"(\d+)")
_DURATION_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))


def natural_key(node: str) -> NaturalKey:
    """A sort key ordering node ids as people do: ``n2`` before ``n10``, case aside."""
    parts = _DIGITS.split(node)
    # split() alternates text and digits from a text part, so ints only ever meet ints.
    key = tuple(int(part) if index % 2 else part.casefold() for index, part in enumerate(parts))
    return key, node


def human_duration(seconds: float) -> str:
    """``45s``, ``12m 3s``, ``3h 4m``, ``2d 5h``: the two largest units, never negative."""
    remaining = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in _DURATION_UNITS:
        count, remaining = divmod(remaining, size)
        if count or parts:
            parts.append(f"{count}{unit}")
    return " ".join(parts[:2]) if parts else "0s"


def titled_table(title: str | Text) -> Table:
    """A table at least as wide as its title, so that a narrow table never wraps its title."""
    width = len(title.plain if isinstance(title, Text) else title)
    return Table(title=title, title_justify="left", min_width=width)


# --- peers ------------------------------------------------------------------------------------


def sorted_peers(peers: Iterable[PeerInfo]) -> list[PeerInfo]:
    """Peers in natural order of their node id."""
    return sorted(peers, key=lambda peer: natural_key(peer.node))


def peers_title(view: PeerList) -> Text:
    """``peers seen by n1``, with a yellow staleness warning while the view is stale."""
    title = Text(f"peers seen by {view.observer}")
    if view.stale:
        title.append(f" (STALE, {view.age_s:.1f}s old)", style=STALE_STYLE)
    return title


def short_services(services: Iterable[str]) -> str:
    """Service names without the common ``meshmind-`` prefix, sorted, comma separated."""
    return ", ".join(sorted(name.removeprefix(SERVICE_PREFIX) for name in services))


def peer_row(peer: PeerInfo, now: float) -> tuple[str, ...]:
    """One peer's cells, in the order of :func:`peers_table`'s columns."""
    load = peer.load
    return (
        peer.node,
        short_services(peer.services),
        ", ".join(sorted(peer.capabilities)),
        f"{load.cpu_pct:.1f}",
        f"{load.mem_pct:.1f}",
        str(sum(load.queues.values())),
        peer.version,
        human_duration(now - peer.started_at),
    )


def peers_table(view: PeerList, now: float | None = None) -> Table:
    """The peers one host sees: services, capabilities, load, version, uptime at ``now``."""
    at = time.time() if now is None else now
    table = titled_table(peers_title(view))
    for column in ("node", "services", "capabilities"):
        table.add_column(column)
    for column in ("cpu %", "mem %", "queued"):
        table.add_column(column, justify="right")
    table.add_column("version")
    table.add_column("up for", justify="right")
    for peer in sorted_peers(view.peers):
        table.add_row(*peer_row(peer, at))
    return table


def peers_json(view: PeerList) -> dict[str, Any]:
    """The view as plain JSON data, peers in the table's order."""
    data: dict[str, Any] = view.model_dump(mode="json")
    data["peers"] = [peer.model_dump(mode="json") for peer in sorted_peers(view.peers)]
    return data


# --- links ------------------------------------------------------------------------------------


def link_key(link: LinkReport) -> tuple[NaturalKey, NaturalKey]:
    """The natural sort key of a directed link: by source, then target."""
    return natural_key(link.source), natural_key(link.target)


def latest_links(links: Iterable[LinkReport]) -> list[LinkReport]:
    """One report per directed link (the most recent), naturally sorted by (source, target)."""
    latest: dict[tuple[str, str], LinkReport] = {}
    for link in links:
        pair = (link.source, link.target)
        if pair not in latest or link.at >= latest[pair].at:
            latest[pair] = link
    return sorted(latest.values(), key=link_key)


def state_text(text: str, state: LinkState) -> Text:
    """``text`` coloured by the link state: good green, degraded yellow, down red."""
    return Text(text, style=STATE_STYLES[state])


def optional_ms(value: float | None) -> str:
    """Milliseconds with one decimal, or ``-`` when unmeasured."""
    return "-" if value is None else f"{value:.1f}"


def link_row(link: LinkReport) -> tuple[str | Text, ...]:
    """One link's cells, in the order of :func:`links_table`'s columns."""
    return (
        link.source,
        link.target,
        state_text(link.state, link.state),
        f"{link.score:.2f}",
        f"{link.delivery * 100:.1f}",
        optional_ms(link.rtt_ms),
        optional_ms(link.jitter_ms),
        str(link.probes),
    )


def links_table(links: Sequence[LinkReport]) -> Table:
    """Every directed link, one row each: state, score, delivery, round trip, jitter, probes."""
    rows = latest_links(links)
    table = titled_table(f"{len(rows)} link(s)")
    for column in ("source", "target", "state"):
        table.add_column(column)
    for column in ("score", "delivery %", "rtt ms", "jitter ms", "probes"):
        table.add_column(column, justify="right")
    for link in rows:
        table.add_row(*link_row(link))
    return table


def links_json(links: Sequence[LinkReport]) -> list[dict[str, Any]]:
    """The links as plain JSON data, one per directed link, in the table's order."""
    return [link.model_dump(mode="json") for link in latest_links(links)]


# --- the link matrix --------------------------------------------------------------------------


def matrix_nodes(links: Iterable[LinkReport]) -> list[str]:
    """Every node that is a source or target of a link, naturally sorted."""
    nodes = {node for link in links for node in (link.source, link.target)}
    return sorted(nodes, key=natural_key)


def matrix_cell(source: str, target: str, by_pair: dict[tuple[str, str], LinkReport]) -> Text:
    """The score of ``source -> target`` coloured by state, ``·`` on the diagonal, else ``?``."""
    if source == target:
        return Text(DIAGONAL, style=MISSING_STYLE)
    link = by_pair.get((source, target))
    if link is None:
        return Text(MISSING, style=MISSING_STYLE)
    return state_text(f"{link.score:.2f}", link.state)


def link_matrix(links: Sequence[LinkReport], nodes: Sequence[str] | None = None) -> Table:
    """Link quality as a square matrix: rows are sources, columns targets."""
    by_pair = {(link.source, link.target): link for link in latest_links(links)}
    order = matrix_nodes(links) if nodes is None else list(dict.fromkeys(nodes))
    table = titled_table(MATRIX_TITLE)
    table.add_column("", style="bold")
    for target in order:
        table.add_column(target, justify="center")
    for source in order:
        table.add_row(source, *(matrix_cell(source, target, by_pair) for target in order))
    return table
