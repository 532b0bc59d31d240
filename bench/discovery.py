"""Discovery benchmark: membership convergence of a 10-host lab (on fast and on 250 ms links),
failure detection on a kill, and false departures while the hub keeps losing the watches."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.kit.hub_consumers import delete_consumers
from tests.kit.labs import observed_lab
from tests.kit.membership import convergence_lag_s, sees_everyone
from tests.kit.recorder import Recorder
from tests.kit.waiting import eventually

from bench._report import Metric, Report, median
from meshmind.bus import BusSettings, configure_logging
from meshmind.bus.protocol import PEER_CHANGES, PEERS_BUCKET, LinkShape, PeerChange
from meshmind.lab import LocalMesh, node_names

NODES = node_names(10)
LABS = 3
KILLS = ("n10", "n9", "n8")
STARTUP_WITHIN_S = 180.0
LEFT_WITHIN_S = 30.0
SETTLE_S = 2.0
SLOW_LABS = 2
SLOW_DELAY_MS = 250.0
LOSS_S = 60.0
LOSS_EVERY_S = 3.0
JITTER_MS = 40.0


async def failure_detect_s(
    mesh: LocalMesh, changes: Recorder[PeerChange], victim: str, live: Sequence[str]
) -> tuple[float, int]:
    """Kill ``victim``'s services; seconds until every host in ``live`` has emitted ``left``
    for it, and how many ``left`` events named another host meanwhile."""
    killed_at = time.monotonic()
    await mesh.kill_services(victim)

    def left_at() -> dict[str, float]:
        out: dict[str, float] = {}
        for at, change in changes.since(killed_at):
            if change.kind == "left" and change.node == victim:
                out.setdefault(change.observer, at)
        return out

    await eventually(lambda: set(live) <= set(left_at()), within=LEFT_WITHIN_S)
    detect = max(at for observer, at in left_at().items() if observer in live) - killed_at
    spurious = sum(1 for _, c in changes.since(killed_at) if c.kind == "left" and c.node != victim)
    return detect, spurious


async def one_lab(
    run_dir: Path,
    converge: list[float],
    detect: list[float],
    odd: list[str],
) -> None:
    """A fresh 10-host lab: one convergence measurement, then one kill per ``KILLS`` entry."""
    async with observed_lab(run_dir, NODES, name="bench-discovery") as (mesh, hub):
        changes = await Recorder.start(hub, PEER_CHANGES)
        await mesh.start_services()
        await eventually(lambda: sees_everyone(changes, NODES), within=STARTUP_WITHIN_S)
        converge.append(convergence_lag_s(changes, NODES))
        await asyncio.sleep(SETTLE_S)
        early = [c for _, c in changes.events if c.kind == "left"]
        if early:
            odd.append(f"{run_dir.name}: {len(early)} 'left' event(s) before any kill")
        live = list(NODES)
        for victim in KILLS:
            live.remove(victim)
            seconds, spurious = await failure_detect_s(mesh, changes, victim, live)
            detect.append(seconds)
            if spurious:
                odd.append(f"{run_dir.name}: {spurious} 'left' for live hosts on killing {victim}")


async def slow_lab(run_dir: Path, converge: list[float], false_left: list[int]) -> None:
    """A fresh 10-host lab with every link 250 ms one way: convergence; then every link gets
    ±40 ms of jitter instead, and the hub loses every watch consumer every few seconds for a
    minute, while no host stops: every 'left' then is a false one."""
    async with observed_lab(run_dir, NODES, name="bench-discovery-slow") as (mesh, hub):
        for node in NODES:
            mesh.host(node).link.set_shape(LinkShape(delay_ms=SLOW_DELAY_MS))
        changes = await Recorder.start(hub, PEER_CHANGES)
        await mesh.start_services()
        await eventually(lambda: sees_everyone(changes, NODES), within=STARTUP_WITHIN_S)
        converge.append(convergence_lag_s(changes, NODES))
        for node in NODES:
            mesh.host(node).link.set_shape(LinkShape(jitter_ms=JITTER_MS))
        await asyncio.sleep(SETTLE_S)
        loss_at = time.monotonic()
        while time.monotonic() - loss_at < LOSS_S:
            await delete_consumers(hub, f"KV_{PEERS_BUCKET}")
            await asyncio.sleep(LOSS_EVERY_S)
        await asyncio.sleep(SETTLE_S)
        false_left.append(sum(1 for _, c in changes.since(loss_at) if c.kind == "left"))


async def run() -> Report:
    """``LABS`` fresh labs, each measuring convergence once and failure detection per kill."""
    configure_logging(BusSettings(log_level="warning"), "bench")
    converge: list[float] = []
    detect: list[float] = []
    odd: list[str] = []
    converge_slow: list[float] = []
    false_left: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(LABS):
            await one_lab(Path(tmp) / f"lab{index + 1}", converge, detect, odd)
        for index in range(SLOW_LABS):
            await slow_lab(Path(tmp) / f"slow{index + 1}", converge_slow, false_left)
    samples = "; ".join(
        f"{name} samples {', '.join(f'{s:.3f}' for s in values)}"
        for name, values in (
            ("converge", converge),
            ("failure_detect", detect),
            ("converge_250ms", converge_slow),
        )
    )
    return Report(
        "discovery",
        [
            Metric(
                "converge_10_hosts_s",
                median(converge),
                "s",
                "value <= 1.0",
                note=(
                    "seconds from the start of the last discovery service (the started_at it "
                    "announces, taken when its discovery logic starts once connected) until every "
                    "host has announced 'joined' for all 10 hosts (each observer's own time of "
                    "its first 'joined' per host); the e2e test uses the same definition"
                ),
            ),
            Metric(
                "failure_detect_s",
                median(detect),
                "s",
                "value <= 3.0",
                note=(
                    "from SIGKILL of one host's services until every other live host has "
                    "emitted 'left' for it; discovery TTL 3 s (default)"
                ),
            ),
            Metric(
                "converge_10_hosts_250ms_s",
                median(converge_slow),
                "s",
                "value <= 2.0",
                note=(
                    f"as converge_10_hosts_s, with every host's link to the hub delayed "
                    f"{SLOW_DELAY_MS:g} ms each way from before the services start; median of "
                    f"{SLOW_LABS} fresh labs"
                ),
            ),
            Metric(
                "false_left_events",
                float(sum(false_left)),
                "events",
                "value <= 0",
                note=(
                    f"'left' events for live hosts, summed over {SLOW_LABS} 10-host labs, during "
                    f"{LOSS_S:g} s in which every consumer of the peers bucket was deleted on the "
                    f"hub every {LOSS_EVERY_S:g} s, with ±{JITTER_MS:g} ms jitter on every link "
                    f"(per lab: {false_left})"
                ),
            ),
        ],
        notes=[
            f"median of {LABS} fresh 10-host labs for convergence and of {LABS * len(KILLS)} "
            f"kills ({', '.join(KILLS)} in turn, {len(KILLS)} per lab) for failure detection; "
            "default service settings (heartbeat 1 s, TTL 3 s); services and leaf servers of "
            "all hosts share this machine's cores with the link emulators and the observer",
            samples,
            *odd,
        ],
    )
