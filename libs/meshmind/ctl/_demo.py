"""``meshctl demo``: a local mesh converged, degraded, cut, trained on, healed, torn down."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from meshmind.bus import Bus, BusError, Empty, EndpointSpec, Message
from meshmind.bus.protocol import (
    DECISION_HISTORY,
    DISCOVERY_PEERS,
    LAB_LINK_CUT,
    LAB_LINK_RESTORE,
    LAB_LINK_SET,
    LAB_NODE_KILL,
    LAB_STATUS,
    LINKS_BUCKET,
    DecisionHistoryQuery,
    DecisionRecord,
    LabStatus,
    LinkCut,
    LinkReport,
    LinkSet,
    LinkShape,
    LinkStatus,
    NodeRef,
    PeerList,
    PeerQuery,
)
from meshmind.ctl._decision import decisions_table
from meshmind.ctl._demo_fl import DEMO_JOB, rounds_in
from meshmind.ctl._demo_fl import plots as fl_plots
from meshmind.ctl._demo_fl import start_job as start_fl_job
from meshmind.ctl._fl import rounds_table
from meshmind.ctl._lab import lab_call, start_lab, stop_lab
from meshmind.ctl._mesh_client import CtlError, services_in_mesh, with_bus
from meshmind.ctl._render import console, lab_table, link_line, services_table
from meshmind.ctl._views import link_matrix, peers_table

T = TypeVar("T")


HUB_INFO = "$JS.hub.API.INFO"
"""A request any host may make that the hub itself answers (its JetStream account info)."""


def round_trip_ms(leaf_url: str, node: str, samples: int = 5) -> float:
    """Median round trip of a request from host ``node``'s leaf to the hub, as that host."""

    async def measure(bus: Bus) -> float:
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            await bus.request_raw(HUB_INFO, b"", timeout=10)
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)

    return with_bus(leaf_url, measure, node=node)


def reachable(leaf_url: str, node: str) -> bool:
    """Whether the hub answers a request made on host ``node``'s leaf, as that host."""

    async def ask(bus: Bus) -> bool:
        try:
            await bus.request_raw(HUB_INFO, b"", timeout=1)
        except BusError:
            return False
        return True

    return with_bus(leaf_url, ask, node=node)


def peer_view(url: str, node: str) -> PeerList | None:
    """What ``node``'s discovery sees, or None while it does not answer; asked on the hub, or
    on ``node``'s own leaf as that host."""

    async def ask(bus: Bus) -> PeerList | None:
        try:
            return await bus.request(DISCOVERY_PEERS, PeerQuery(), node=node, timeout=2)
        except BusError:
            return None

    return with_bus(url, ask, node=node)


def link_reports(hub_url: str) -> list[LinkReport]:
    """Every link report in the mesh-links bucket."""

    async def read(bus: Bus) -> list[LinkReport]:
        try:
            bucket = await bus.hub().key_value(LINKS_BUCKET, LinkReport, create=False)
            return list((await bucket.values()).values())
        except (KeyError, BusError):
            return []

    return with_bus(hub_url, read)


def decisions(hub_url: str) -> list[DecisionRecord]:
    """The committed decisions, from any host whose decision service answers."""

    async def ask(bus: Bus) -> list[DecisionRecord]:
        for node in ("n1", "n5", "n3"):
            try:
                query = DecisionHistoryQuery()
                return (await bus.request(DECISION_HISTORY, query, node=node, timeout=10)).decisions
            except BusError:
                continue
        return []

    return with_bus(hub_url, ask)


def decided(
    hub_url: str, about: Callable[[DecisionRecord], bool], *, outcome: bool = False
) -> Callable[[], list[DecisionRecord] | None]:
    """A check that returns the decisions once one ``about`` something was executed (and,
    with ``outcome``, its outcome is known)."""

    def check() -> list[DecisionRecord] | None:
        records = decisions(hub_url)
        done = [r for r in records if about(r) and r.executed and (r.outcome or not outcome)]
        return records if done else None

    return check


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


def change_link(run_dir: Path, spec: EndpointSpec[Any, LinkStatus], request: Message) -> None:
    """Shape, cut or restore a link through the lab, and show the link as it is now."""
    link: LinkStatus = lab_call(run_dir, spec, request)
    console.print(link_line(link), highlight=False)


def run_demo(nodes: int, run_dir: Path) -> None:
    """Every step of the demo; the lab is torn down even when a step fails."""
    names = [f"n{i}" for i in range(1, nodes + 1)]
    pairs = [(a, b) for a in names for b in names if a != b]
    console.rule(f"1. start a {nodes}-host mesh: hub, leaves behind link emulators, services")
    status = start_lab(run_dir, nodes, services=True, timeout=120.0)
    console.print(lab_table(status))
    try:
        hub, leaf = status.hub_url, {h.node: h.leaf_url for h in status.hosts}

        console.rule("2. discovery: every host sees every other")
        view = wait_for("n1 sees every host", lambda: _complete(peer_view(hub, "n1"), names))
        console.print(peers_table(view))
        console.print(services_table(with_bus(hub, lambda bus: services_in_mesh(bus, 0.5))))

        console.rule("3. health-monitor: every link measured")
        reports = wait_for(
            "all links good", links_where(hub, lambda s: all(s.get(p) == "good" for p in pairs))
        )
        console.print(link_matrix(reports, names))

        console.rule("4. degrade n2's link: 150ms delay, 20ms jitter, 1mbit, 5% stalls")
        clean = round_trip_ms(leaf["n2"], "n2")
        degraded = LinkShape(delay_ms=150, jitter_ms=20, rate_bps=1_000_000, stall_pct=5)
        change_link(run_dir, LAB_LINK_SET, LinkSet(node="n2", shape=degraded))
        console.print(
            f"round trip n2 -> hub: {clean:.1f} ms clean, "
            f"{round_trip_ms(leaf['n2'], 'n2'):.1f} ms degraded"
        )
        reports = wait_for(
            "n2's links degraded",
            links_where(hub, lambda s: all(s.get(p) == "degraded" for p in pairs if "n2" in p)),
        )
        console.print(link_matrix(reports, names))
        records = wait_for(
            "a committed, executed decision about n2's links",
            decided(hub, lambda r: "n2" in r.anomaly.subject.split(".") and "link" in r.key),
            within=90.0,
        )
        console.print(decisions_table(records))

        console.rule("5. cut n3 off the hub; its leaf keeps serving its own host")
        change_link(run_dir, LAB_LINK_CUT, LinkCut(node="n3"))
        console.print(f"n3 reaches the hub: {reachable(leaf['n3'], 'n3')}")
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
        change_link(run_dir, LAB_LINK_RESTORE, NodeRef(node="n2"))
        change_link(run_dir, LAB_LINK_RESTORE, NodeRef(node="n3"))
        reports = wait_for(
            "all links good again",
            links_where(hub, lambda s: all(s.get(p) == "good" for p in pairs)),
        )
        console.print(link_matrix(reports, names))

        console.rule("7. federated learning: a digits job on every host; n5's link degrades")
        job = start_fl_job(hub)
        console.print(
            f"started {job.job_id} on {job.coordinator}: {job.spec.rounds} rounds, "
            f"accuracy before training {job.initial_accuracy:.4f}",
            highlight=False,
        )
        wait_for("2 rounds in", rounds_in(hub, "demo", 2), within=120.0)
        change_link(run_dir, LAB_LINK_SET, LinkSet(node="n5", shape=LinkShape(delay_ms=250)))

        console.rule("8. kill n4 mid-job: the others agree to restart it; the job goes on")
        lab_call(run_dir, LAB_NODE_KILL, NodeRef(node="n4"))
        records = wait_for(
            "n4 healed: decision committed, executed, outcome known",
            decided(hub, lambda r: r.key.startswith("host-gone/n4/"), outcome=True),
            within=120.0,
        )
        console.print(decisions_table(records))
        final: LabStatus = lab_call(run_dir, LAB_STATUS, Empty())
        console.print(lab_table(final))
        job = wait_for("the job done", rounds_in(hub, "demo", DEMO_JOB.rounds), within=300.0)
        change_link(run_dir, LAB_LINK_RESTORE, NodeRef(node="n5"))
        console.print(rounds_table(job))
        for path in fl_plots(job, run_dir.parent / "plots"):
            console.print(f"plot: {path}", highlight=False, soft_wrap=True)
    finally:
        console.rule("9. tear down")
        killed = stop_lab(run_dir, timeout=30.0) == "killed"
        console.print(
            f"lab in {run_dir} is down" + (": it did not stop in 30s, killed" if killed else ""),
            highlight=False,
        )


def _complete(view: PeerList | None, names: list[str]) -> PeerList | None:
    return view if view is not None and {p.node for p in view.peers} >= set(names) else None
