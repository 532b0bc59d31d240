"""``meshctl demo``: a local mesh started, shown, degraded, partitioned, healed and torn down."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from meshmind.bus import Bus, BusError, Empty
from meshmind.bus.protocol import LAB_STATUS, LabStatus
from meshmind.ctl._mesh_client import lab_state, with_bus
from meshmind.ctl._render import console


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


def run_demo(nodes: int, run_dir: Path) -> None:
    """Every step of the demo; the lab is torn down even when a step fails."""
    from meshmind.ctl import _app as ctl

    console.rule(f"1. start a {nodes}-host mesh: a hub, {nodes} leaves, a link emulator each")
    ctl.up(nodes=nodes, run_dir=run_dir, services=True, timeout=120.0, json_out=False)
    try:
        status: LabStatus = ctl._lab_call(run_dir, LAB_STATUS, Empty())
        leaf = {h.node: h.leaf_url for h in status.hosts}
        console.rule("2. every service instance, from $SRV.PING / $SRV.INFO / $SRV.STATS")
        ctl.services(url=lab_state(run_dir).hub_url, run_dir=run_dir, wait=0.5, json_out=False)

        console.rule("3. degrade n2's link: 80ms delay, 20ms jitter, 1mbit, 5% stalls")
        clean = round_trip_ms(leaf["n2"])
        ctl.link_set(
            "n2",
            delay="80ms",
            jitter="20ms",
            rate="1mbit",
            stall="5%",
            stall_time="200ms",
            run_dir=run_dir,
            json_out=False,
        )
        degraded = round_trip_ms(leaf["n2"])
        console.print(f"round trip n2 -> hub: {clean:.1f} ms clean, {degraded:.1f} ms degraded")

        console.rule("4. cut n3 off the hub; its leaf keeps serving its own host")
        ctl.link_cut("n3", run_dir=run_dir, json_out=False)
        console.print(f"n3 reaches the hub: {reachable(leaf['n3'])}")

        console.rule("5. heal both links")
        ctl.link_restore("n2", run_dir=run_dir, json_out=False)
        ctl.link_restore("n3", run_dir=run_dir, json_out=False)
        deadline = time.monotonic() + 15
        while not reachable(leaf["n3"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        console.print(
            f"n3 reaches the hub: {reachable(leaf['n3'])}; "
            f"n2 round trip {round_trip_ms(leaf['n2']):.1f} ms"
        )
        ctl.status(run_dir=run_dir, json_out=False)
    finally:
        console.rule("6. tear down")
        ctl.down(run_dir=run_dir, timeout=30.0)
