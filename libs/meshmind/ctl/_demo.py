"""``meshctl demo``: a local mesh started, converged, degraded, partitioned, healed, torn down."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from meshmind.bus import Bus, BusError, Empty
from meshmind.bus.protocol import (
    DISCOVERY_PEERS,
    LAB_STATUS,
    LINKS_BUCKET,
    LabStatus,
    LinkReport,
    PeerList,
    PeerQuery,
)
from meshmind.ctl._mesh_client import CtlError, with_bus
from meshmind.ctl._render import console
from meshmind.ctl._views import link_matrix, peers_table

T = TypeVar("T")


def round_trip_ms(leaf_url: str, samples: int = 5) -> float:
    """Median round trip of a request from a host's leaf to the lab's service at the hub."""

    async def measure(bus: Bus) -> float:
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            await bus.request(LAB_STATUS, Empty(), timeout=10)
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)

    return with_bus(leaf_url, measure)


def reachable(leaf_url: str) -> bool:
    """Whether the hub answers a request made on this leaf."""

    async def ask(bus: Bus) -> bool:
        try:
            await bus.request(LAB_STATUS, Empty(), timeout=1)
        except BusError:
            return False
        return True

    return with_bus(leaf_url, ask)


def peer_view(hub_url: str, node: str) -> PeerList | None:
    """What ``node``'s discovery sees, or None while it does not answer."""

    async def ask(bus: Bus) -> PeerList | None:
        try:
            return await bus.request(DISCOVERY_PEERS, PeerQuery(), node=node, timeout=2)
        except BusError:
            return None

    return with_bus(hub_url, ask)


def link_reports(hub_url: str) -> list[LinkReport]:
    """Every link report in the mesh-links bucket."""

    async def read(bus: Bus) -> list[LinkReport]:
        try:
            bucket = await bus.hub().key_value(LINKS_BUCKET, LinkReport, create=False)
            return list((await bucket.values()).values())
        except (KeyError, BusError):
            return []

    return with_bus(hub_url, read)


def wait_for(what: str, check: Callable[[], T | None], within: float = 60.0) -> T:
    """Poll ``check`` until it returns something; say how long it took."""
    start = time.monotonic()
    while (result := check()) is None:
        if time.monotonic() - start > within:
            raise CtlError(f"timed out after {within:g}s waiting for {what}")
        time.sleep(0.25)
    console.print(f"[dim]{what}: {time.monotonic() - start:.1f}s[/dim]")
    return result


def links_where(
    hub_url: str, wanted: Callable[[Mapping[tuple[str, str], str]], bool]
) -> Callable[[], list[LinkReport] | None]:
    """A check that returns the link reports once ``wanted`` holds of their states."""

    def check() -> list[LinkReport] | None:
        reports = link_reports(hub_url)
        states = {(r.source, r.target): r.state for r in reports}
        return reports if wanted(states) else None

    return check


def run_demo(nodes: int, run_dir: Path) -> None:
    """Every step of the demo; the lab is torn down even when a step fails."""
    from meshmind.ctl import _app as ctl

    names = [f"n{i}" for i in range(1, nodes + 1)]
    pairs = [(a, b) for a in names for b in names if a != b]
    console.rule(f"1. start a {nodes}-host mesh: hub, leaves behind link emulators, services")
    ctl.up(nodes=nodes, run_dir=run_dir, services=True, timeout=120.0, json_out=False)
    try:
        status: LabStatus = ctl._lab_call(run_dir, LAB_STATUS, Empty())
        hub, leaf = status.hub_url, {h.node: h.leaf_url for h in status.hosts}

        console.rule("2. discovery: every host sees every other")
        view = wait_for("n1 sees every host", lambda: _complete(peer_view(hub, "n1"), names))
        console.print(peers_table(view))
        ctl.services(url=hub, run_dir=run_dir, wait=0.5, json_out=False)

        console.rule("3. health-monitor: every link measured")
        reports = wait_for(
            "all links good", links_where(hub, lambda s: all(s.get(p) == "good" for p in pairs))
        )
        console.print(link_matrix(reports, names))

        console.rule("4. degrade n2's link: 150ms delay, 20ms jitter, 1mbit, 5% stalls")
        clean = round_trip_ms(leaf["n2"])
        ctl.link_set(
            "n2",
            delay="150ms",
            jitter="20ms",
            rate="1mbit",
            stall="5%",
            stall_time="200ms",
            run_dir=run_dir,
            json_out=False,
        )
        console.print(
            f"round trip n2 -> hub: {clean:.1f} ms clean, "
            f"{round_trip_ms(leaf['n2']):.1f} ms degraded"
        )
        reports = wait_for(
            "n2's links degraded",
            links_where(hub, lambda s: all(s.get(p) == "degraded" for p in pairs if "n2" in p)),
        )
        console.print(link_matrix(reports, names))

        console.rule("5. cut n3 off the hub; its leaf keeps serving its own host")
        ctl.link_cut("n3", run_dir=run_dir, json_out=False)
        console.print(f"n3 reaches the hub: {reachable(leaf['n3'])}")
        reports = wait_for(
            "links to n3 down",
            links_where(hub, lambda s: all(s.get((a, "n3")) == "down" for a in names if a != "n3")),
        )
        console.print(link_matrix(reports, names))
        stale = peer_view(leaf["n3"], "n3")
        if stale is not None:
            console.print(
                f"n3's own view: {len(stale.peers)} peers, stale={stale.stale}, "
                f"{stale.age_s:.1f}s old"
            )

        console.rule("6. heal both links")
        ctl.link_restore("n2", run_dir=run_dir, json_out=False)
        ctl.link_restore("n3", run_dir=run_dir, json_out=False)
        reports = wait_for(
            "all links good again",
            links_where(hub, lambda s: all(s.get(p) == "good" for p in pairs)),
        )
        console.print(link_matrix(reports, names))
        ctl.status(run_dir=run_dir, json_out=False)
    finally:
        console.rule("7. tear down")
        ctl.down(run_dir=run_dir, timeout=30.0)


def _complete(view: PeerList | None, names: list[str]) -> PeerList | None:
    return view if view is not None and {p.node for p in view.peers} >= set(names) else None
