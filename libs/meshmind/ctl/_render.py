"""How meshctl shows things: rich tables for people, JSON for pipes."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from meshmind.bus.protocol import CutMode, LabStatus, LinkShape, LinkStatus

console = Console(soft_wrap=True)
error_console = Console(stderr=True, soft_wrap=True, highlight=False)


def print_json(value: Any) -> None:
    """One JSON document on stdout."""
    print(json.dumps(value, sort_keys=True))


CUT_LABELS: dict[CutMode, str] = {
    "loud": "cut",
    "silent": "cut silently",
    "up": "cut one way: up (host -> hub) dropped",
    "down": "cut one way: down (hub -> host) dropped",
}


def describe_shape(shape: LinkShape, cut: CutMode | None) -> str:
    """The kind of cut, ``clean`` or the impairments, as an operator would type them."""
    if cut is not None:
        return f"[red]{CUT_LABELS[cut]}[/red]"
    parts = []
    if shape.delay_ms:
        parts.append(f"delay {shape.delay_ms:g}ms")
    if shape.jitter_ms:
        parts.append(f"jitter {shape.jitter_ms:g}ms")
    if shape.rate_bps:
        parts.append(f"rate {shape.rate_bps / 1e6:g}mbit")
    if shape.stall_pct:
        parts.append(f"stall {shape.stall_pct:g}% x {shape.stall_ms:g}ms")
    return ", ".join(parts) if parts else "[green]clean[/green]"


def lab_table(status: LabStatus) -> Table:
    """The lab's hosts: leaf, process, link."""
    table = Table(title=f"meshmind lab - hub {status.hub_url}", title_justify="left")
    for column in ("host", "leaf", "pid", "link", "conns", "up", "down"):
        table.add_column(column)
    for host in status.hosts:
        table.add_row(
            host.node,
            ":" + host.leaf_url.rsplit(":", 1)[-1],
            str(host.pid) if host.running else "[red]stopped[/red]",
            describe_shape(host.link.shape, host.link.cut_mode),
            str(host.link.connections),
            _bytes(host.link.bytes_up),
            _bytes(host.link.bytes_down),
        )
    return table


def link_line(link: LinkStatus) -> str:
    """One host's link in one line."""
    return f"{link.node}: {describe_shape(link.shape, link.cut_mode)}"


def services_table(services: list[dict[str, Any]]) -> Table:
    """Every service instance in the mesh."""
    table = Table(title=f"{len(services)} service instance(s)", title_justify="left")
    for column in ("node", "service", "version", "id", "endpoints", "requests", "errors"):
        table.add_column(column)
    for s in services:
        table.add_row(
            s["node"],
            s["name"],
            s["version"],
            s["id"],
            str(len(s["endpoints"])),
            str(s["requests"]),
            str(s["errors"]),
        )
    return table


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{count}B" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}TiB"
