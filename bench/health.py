"""Health benchmark: how fast a degraded link is seen and recovers, what probing costs, and how
long a full read of the link table takes over a slow link."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.kit.labs import observed_lab
from tests.kit.recorder import Recorder
from tests.kit.waiting import eventually

from bench._report import Metric, Report, median
from meshmind.bus import Bus, BusSettings, configure_logging
from meshmind.bus.protocol import (
    LINK_CHANGES,
    LINKS_BUCKET,
    PEER_CHANGES,
    LinkChange,
    LinkReport,
    LinkShape,
    PeerChange,
)
from meshmind.health import link_key, read_links
from meshmind.lab import LocalMesh, node_names

DEGRADE_NODES = node_names(5)
DEGRADE_VICTIMS = ("n5", "n4", "n3", "n2", "n1")
SHAPE = LinkShape(delay_ms=150, stall_pct=5)
CPU_NODES = node_names(10)
CPU_WINDOWS = 3
CPU_WINDOW_S = 20.0
STARTUP_WITHIN_S = 180.0
CHANGE_WITHIN_S = 60.0
SETTLE_S = 3.0
READ_SOURCES = [f"a{i}" for i in range(1, 9)]
READ_TARGETS = [f"b{i}" for i in range(1, 9)]
READ_SHAPE = LinkShape(delay_ms=200)
READ_REPETITIONS = 7
HEALTH = "meshmind_health_monitor"
DISCOVERY = "meshmind_discovery"


def link_name(change: LinkChange) -> str:
    """``source->target`` of a change's link."""
    return f"{change.link.source}->{change.link.target}"


def all_links_good(links: Recorder[LinkChange], nodes: Sequence[str]) -> bool:
    """Whether every directed link between ``nodes`` has reported, its latest state ``good``."""
    latest = {link_name(c): c.link.state for _, c in links.events}
    expected = {f"{s}->{t}" for s in nodes for t in nodes if s != t}
    return expected <= set(latest) and all(latest[k] == "good" for k in expected)


def links_of(node: str, nodes: Sequence[str]) -> set[str]:
    """Every directed link to and from ``node``."""
    others = [n for n in nodes if n != node]
    return {f"{node}->{n}" for n in others} | {f"{n}->{node}" for n in others}


def first_all_in(
    links: Recorder[LinkChange], since: float, expected: set[str], state: str
) -> float | None:
    """The arrival time of the change after which every link of ``expected`` has ``state`` as
    its latest state (counting only changes since ``since``), or None if that has not happened."""
    latest: dict[str, str] = {}
    for at, change in links.since(since):
        name = link_name(change)
        if name in expected:
            latest[name] = change.link.state
            if len(latest) == len(expected) and all(v == state for v in latest.values()):
                return at
    return None


async def converged(mesh: LocalMesh, hub: Bus) -> Recorder[LinkChange]:
    """Start every host's services; return once each host sees all and every link is good."""
    peers: Recorder[PeerChange] = await Recorder.start(hub, PEER_CHANGES)
    links: Recorder[LinkChange] = await Recorder.start(hub, LINK_CHANGES)
    await mesh.start_services()
    nodes = set(mesh.nodes)

    def everyone_sees_everyone() -> bool:
        seen: dict[str, set[str]] = {}
        for _, change in peers.events:
            if change.kind == "joined":
                seen.setdefault(change.observer, set()).add(change.node)
        return all(seen.get(n) == nodes for n in nodes)

    await eventually(everyone_sees_everyone, within=STARTUP_WITHIN_S)
    await eventually(lambda: all_links_good(links, mesh.nodes), within=STARTUP_WITHIN_S)
    return links


async def all_reach(
    links: Recorder[LinkChange], since: float, expected: set[str], state: str
) -> float:
    """Wait until every link in ``expected`` has reported ``state`` since ``since``; when."""
    await eventually(
        lambda: first_all_in(links, since, expected, state) is not None,
        within=CHANGE_WITHIN_S,
        every=0.02,
    )
    reached = first_all_in(links, since, expected, state)
    assert reached is not None
    return reached


async def degrade_and_recover(
    mesh: LocalMesh, links: Recorder[LinkChange], victim: str, odd: list[str]
) -> tuple[float, float]:
    """Shape ``victim``'s link; seconds until all its links are degraded, then, after
    restoring it, seconds until they are all good again."""
    expected = links_of(victim, mesh.nodes)
    degraded_at = time.monotonic()
    mesh.host(victim).link.set_shape(SHAPE)
    detected = await all_reach(links, degraded_at, expected, "degraded")
    went_down = sorted(
        {link_name(c) for _, c in links.since(degraded_at) if c.link.state == "down"}
    )
    if went_down:
        odd.append(f"degrading {victim}: went 'down' on the way: {', '.join(went_down)}")

    restored_at = time.monotonic()
    mesh.host(victim).link.restore()
    recovered = await all_reach(links, restored_at, expected, "good")
    bystanders = sorted(
        {
            link_name(c)
            for _, c in links.since(degraded_at)
            if link_name(c) not in expected and c.link.state != "good"
        }
    )
    if bystanders:
        odd.append(
            f"degrading {victim}: links not touching it left 'good': {', '.join(bystanders)}"
        )
    await eventually(lambda: all_links_good(links, mesh.nodes), within=CHANGE_WITHIN_S)
    await asyncio.sleep(SETTLE_S)
    return detected - degraded_at, recovered - restored_at


async def degraded_lab(run_dir: Path, odd: list[str]) -> tuple[list[float], list[float]]:
    """A 5-host lab: degrade, detect, restore and recover once per ``DEGRADE_VICTIMS`` host."""
    detect: list[float] = []
    recover: list[float] = []
    async with observed_lab(run_dir, DEGRADE_NODES, name="bench-health") as (mesh, hub):
        links = await converged(mesh, hub)
        for victim in DEGRADE_VICTIMS:
            seconds, back = await degrade_and_recover(mesh, links, victim, odd)
            detect.append(seconds)
            recover.append(back)
    return detect, recover


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks, from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


async def cpu_pct(pids: dict[str, int], window_s: float) -> dict[str, float]:
    """CPU use of each process over ``window_s`` seconds, in percent of one core."""
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    before = {n: cpu_ticks(p) for n, p in pids.items()}
    started = time.monotonic()
    await asyncio.sleep(window_s)
    after = {n: cpu_ticks(p) for n, p in pids.items()}
    elapsed = time.monotonic() - started
    return {n: 100.0 * (after[n] - before[n]) / ticks_per_s / elapsed for n in pids}


def service_pids(mesh: LocalMesh, service: str) -> dict[str, int]:
    """The pid of ``service`` on every host."""
    pids: dict[str, int] = {}
    for node in mesh.nodes:
        pid = mesh.host(node).services[service].pid
        if pid is None:
            raise RuntimeError(f"{node}/{service} is not running")
        pids[node] = pid
    return pids


async def cpu_lab(run_dir: Path, odd: list[str]) -> tuple[list[float], list[float]]:
    """A 10-host lab, converged and all links good: per window, the median over hosts of each
    service's CPU use."""
    probe: list[float] = []
    discovery: list[float] = []
    async with observed_lab(run_dir, CPU_NODES, name="bench-health-cpu") as (mesh, hub):
        await converged(mesh, hub)
        await asyncio.sleep(SETTLE_S)
        health_pids = service_pids(mesh, HEALTH)
        discovery_pids = service_pids(mesh, DISCOVERY)
        for window in range(CPU_WINDOWS):
            usage = await cpu_pct({**health_pids, **_prefixed(discovery_pids)}, CPU_WINDOW_S)
            per_host_probe = [usage[n] for n in health_pids]
            per_host_discovery = [usage[f"d:{n}"] for n in discovery_pids]
            probe.append(median(per_host_probe))
            discovery.append(median(per_host_discovery))
            odd.append(
                f"cpu window {window + 1}: health monitor per host "
                f"min {min(per_host_probe):.2f}% max {max(per_host_probe):.2f}%, "
                f"discovery min {min(per_host_discovery):.2f}% "
                f"max {max(per_host_discovery):.2f}%"
            )
    return probe, discovery


def _prefixed(pids: dict[str, int]) -> dict[str, int]:
    return {f"d:{n}": p for n, p in pids.items()}


def stored_report(source: str, target: str) -> LinkReport:
    """A plausible report of the link ``source -> target``, measured now."""
    return LinkReport(
        source=source,
        target=target,
        state="good",
        score=0.97,
        delivery=1.0,
        rtt_ms=12.5,
        jitter_ms=3.1,
        probes=120,
        at=time.time(),
    )


async def links_read_lab(run_dir: Path, odd: list[str]) -> list[float]:
    """A one-host lab whose link has 200 ms of one-way delay; 64 reports stored from the hub:
    seconds per full read of the link table (what ``meshctl links`` does) from the host."""
    mesh = LocalMesh(run_dir, ["n1"])
    await mesh.start(timeout=60, services=False)
    try:
        hub = await Bus.connect(BusSettings(node_id="bench", nats_url=mesh.hub_url), name="bench")
        reader = await Bus.connect(
            BusSettings(node_id="n1", nats_url=mesh.host("n1").url), name="bench-reader"
        )
        try:
            bucket = await hub.hub().key_value(LINKS_BUCKET, LinkReport, ttl_s=600)
            for source in READ_SOURCES:
                for target in READ_TARGETS:
                    await bucket.put(link_key(source, target), stored_report(source, target))
            mesh.host("n1").link.set_shape(READ_SHAPE)
            await read_links(reader)  # warm-up: the connection's first JetStream requests
            samples = []
            for _ in range(READ_REPETITIONS):
                started = time.perf_counter()
                checked = await read_links(reader)
                samples.append(time.perf_counter() - started)
                expected = len(READ_SOURCES) * len(READ_TARGETS)
                if len(checked.accepted) != expected or checked.refused:
                    odd.append(
                        f"links read: {len(checked.accepted)} of {expected} reports, "
                        f"{len(checked.refused)} refused"
                    )
            return samples
        finally:
            await reader.close()
            await hub.close()
    finally:
        await mesh.stop()


async def run() -> Report:
    """The degraded-link lab, then the CPU lab."""
    configure_logging(BusSettings(log_level="warning"), "bench")
    odd: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        detect, recover = await degraded_lab(Path(tmp) / "degraded", odd)
        probe, discovery = await cpu_lab(Path(tmp) / "cpu", odd)
        reads = await links_read_lab(Path(tmp) / "read", odd)

    def listed(values: list[float]) -> str:
        return ", ".join(f"{v:.3f}" for v in values)

    return Report(
        "health",
        [
            Metric(
                "degraded_detect_s",
                median(detect),
                "s",
                "value <= 3.0",
                note="probe interval 1.0 s (default); target is three probe intervals",
            ),
            Metric(
                "recover_s",
                median(recover),
                "s",
                note=(
                    "from restoring the link until every link to and from the host is 'good' again"
                ),
            ),
            Metric(
                "probe_cpu_pct_per_host_10_hosts",
                median(probe),
                "%",
                note=(
                    "health monitor process, utime+stime from /proc over "
                    f"{CPU_WINDOW_S:g} s, percent of one core, median over the 10 hosts"
                ),
            ),
            Metric(
                "discovery_cpu_pct_per_host_10_hosts",
                median(discovery),
                "%",
                note="discovery process, measured the same way in the same windows",
            ),
            Metric(
                "links_read_64_keys_200ms_s",
                median(reads),
                "s",
                "value <= 1.0",
                note=(
                    "a full read of the mesh-links bucket holding 64 reports (read_links: bind, "
                    "one ordered consumer, checks), from a host whose hub link has 200 ms of "
                    "one-way delay (400 ms round trip)"
                ),
            ),
        ],
        notes=[
            f"degraded/recover: one 5-host lab, median of {len(DEGRADE_VICTIMS)} repetitions, "
            f"a different host each ({', '.join(DEGRADE_VICTIMS)}), shape delay 150 ms, "
            "stall 5 % (200 ms stalls); detection is from set_shape until every one of the 8 "
            "links to and from the host has 'degraded' as its latest reported state "
            "(LINK_CHANGES arrival at a hub-connected observer); each repetition starts with "
            f"all 20 links 'good' and {SETTLE_S:g} s of quiet",
            f"cpu: one 10-host lab after convergence with all 90 links 'good', median of "
            f"{CPU_WINDOWS} windows of {CPU_WINDOW_S:g} s; each window's figure is the median "
            "over hosts; default service settings (probe interval 1.0 s, heartbeat 1 s)",
            f"degraded_detect samples {listed(detect)}; recover samples {listed(recover)}",
            f"probe cpu samples {listed(probe)}; discovery cpu samples {listed(discovery)}",
            f"links read: median of {READ_REPETITIONS} reads after one warm-up read; "
            f"samples {listed(reads)}",
            *odd,
        ],
    )
