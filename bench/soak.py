"""`make soak`: the lab under a stream of faults; memory, events seen, acked writes lost."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.kit.labs import observed_lab
from tests.kit.membership import sees_everyone
from tests.kit.recorder import Recorder
from tests.kit.waiting import eventually

from bench._report import Metric, Report
from meshmind.bus import Bus, BusError, BusSettings, KeyValue, Message, configure_logging
from meshmind.bus.protocol import (
    CONSENSUS_GET,
    CONSENSUS_PUT,
    DISCOVERY_PEERS,
    LINK_CHANGES,
    PEER_CHANGES,
    CutMode,
    KvKey,
    KvPut,
    LinkChange,
    LinkShape,
    PeerChange,
    PeerQuery,
)
from meshmind.lab import LocalMesh, host_services, node_names

LEDGER_BUCKET = "soak-ledger"
WITNESS = "n1"
"""A host no fault touches: its services live the whole run, so their memory is the trend."""
CUT_MODES: tuple[CutMode, ...] = ("loud", "silent", "up", "down")
SAMPLE_EVERY_S = 10.0
WARMUP_S = 60.0


class LedgerEntry(Message):
    """One acknowledged write of the soak's writer."""

    seq: int
    at: float


@dataclass
class Soak:
    """One run: the lab, the fault schedule, and what was seen."""

    mesh: LocalMesh
    hub: Bus
    rng: random.Random
    fault_every_s: float
    faults: Counter[str] = field(default_factory=Counter)
    acked: list[int] = field(default_factory=list)
    write_failures: int = 0
    consensus_acked: list[int] = field(default_factory=list)
    consensus_failures: int = 0
    memory: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    async def write_forever(self, ledger: KeyValue[LedgerEntry]) -> None:
        """Acknowledged writes through a host's leaf; every acked one must survive the run."""
        seq = 0
        while True:
            seq += 1
            try:
                async with asyncio.timeout(5):
                    await ledger.put(f"w{seq}", LedgerEntry(seq=seq, at=time.time()))
            except (BusError, TimeoutError):
                self.write_failures += 1
            else:
                self.acked.append(seq)
            await asyncio.sleep(0.2)

    async def commit_forever(self) -> None:
        """Acknowledged consensus writes through the witness host's consensus service."""
        seq = 0
        while True:
            seq += 1
            try:
                reply = await self.hub.request(
                    CONSENSUS_PUT,
                    KvPut(key=f"soak/w{seq}", value=str(seq)),
                    node=WITNESS,
                    timeout=5,
                )
            except BusError:
                self.consensus_failures += 1
            else:
                if reply.ok:
                    self.consensus_acked.append(seq)
                else:
                    self.consensus_failures += 1
            await asyncio.sleep(0.5)

    async def sample_memory(self, started: float) -> None:
        """Resident memory of every service process, every ``SAMPLE_EVERY_S``."""
        while True:
            for host in self.mesh.hosts.values():
                for name, process in host.services.items():
                    rss = _rss_kib(process.pid)
                    if rss is not None:
                        key = f"{host.node}/{name}/{process.pid}"
                        self.memory.setdefault(key, []).append((time.monotonic() - started, rss))
            await asyncio.sleep(SAMPLE_EVERY_S)

    async def inject_faults(self) -> None:
        """One fault after another, each undone before the next: kills, cuts, degradations,
        hub restarts."""
        victims = [n for n in self.mesh.nodes if n != WITNESS]
        kinds = ("kill", "cut", "degrade", "hub-restart")
        while True:
            await asyncio.sleep(self.fault_every_s * self.rng.uniform(0.5, 1.5))
            kind = self.rng.choice(kinds)
            node = self.rng.choice(victims)
            self.faults[kind] += 1
            self.log.append(f"{time.strftime('%H:%M:%S')} {kind} {node}")
            if kind == "kill":
                await self.mesh.kill(node)
                await asyncio.sleep(self.rng.uniform(2, 8))
                await self.mesh.restart(node, timeout=60)
            elif kind == "cut":
                mode: CutMode = self.rng.choice(CUT_MODES)
                self.faults[f"cut-{mode}"] += 1
                await self.mesh.host(node).link.cut(mode)
                await asyncio.sleep(self.rng.uniform(3, 15))
                self.mesh.host(node).link.restore()
            elif kind == "degrade":
                shape = LinkShape(delay_ms=self.rng.choice([100, 250]), jitter_ms=40, stall_pct=2)
                self.mesh.host(node).link.set_shape(shape)
                await asyncio.sleep(self.rng.uniform(10, 30))
                self.mesh.host(node).link.restore()
            else:
                await self.restart_hub()

    async def restart_hub(self) -> None:
        """Stop the hub cleanly and start it again on the same store."""
        hub = self.mesh.hub
        assert hub is not None
        await hub.stop()
        await asyncio.sleep(self.rng.uniform(1, 5))
        await hub.start()


def _rss_kib(pid: int | None) -> int | None:
    if pid is None:
        return None
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def rss_growth_pct(series: dict[str, list[tuple[float, int]]], duration_s: float) -> float:
    """The largest growth of resident memory, in percent, from the first sample after the
    process's own warm-up to the last, among processes that lived at least half the run."""
    growth = [0.0]
    for samples in series.values():
        born = samples[0][0]
        steady = [rss for at, rss in samples if at >= born + WARMUP_S]
        if len(steady) >= 2 and samples[-1][0] - samples[0][0] >= duration_s / 2:
            growth.append(100.0 * (steady[-1] - steady[0]) / steady[0])
    return max(growth)


async def soak(duration_s: float, nodes: int, fault_every_s: float, seed: int) -> Report:
    """Run the lab for ``duration_s`` under faults, then check what was acknowledged."""
    configure_logging(BusSettings(log_level="warning"), "soak")
    names = node_names(nodes)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "lab"
        async with observed_lab(
            run_dir, names, name="soak", services=host_services(names, run_dir)
        ) as (mesh, hub):
            peers = await Recorder.start(hub, PEER_CHANGES)
            links = await Recorder.start(hub, LINK_CHANGES)
            await mesh.start_services()
            await eventually(lambda: sees_everyone(peers, names), within=120)
            writer_bus = await Bus.connect(
                BusSettings(node_id=WITNESS, nats_url=mesh.host(WITNESS).url), name="soak-writer"
            )
            ledger = await writer_bus.hub().key_value(LEDGER_BUCKET, LedgerEntry, history=1)
            run = Soak(mesh, hub, random.Random(seed), fault_every_s)
            started = time.monotonic()
            tasks = [
                asyncio.create_task(run.write_forever(ledger)),
                asyncio.create_task(run.commit_forever()),
                asyncio.create_task(run.sample_memory(started)),
                asyncio.create_task(run.inject_faults()),
            ]
            await asyncio.sleep(duration_s)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            elapsed = time.monotonic() - started
            for node in names:  # undo whatever fault was in progress
                host = mesh.host(node)
                host.link.restore()
                if not host.server.running:
                    await mesh.restart(node, timeout=60)
            if mesh.hub is not None and not mesh.hub.running:
                await mesh.hub.start()
            await mesh.wait_joined(names, timeout=60)
            whole = await _membership_whole(hub, names)
            stored = await _stored_seqs(ledger)
            lost = sorted(set(run.acked) - stored)
            lost_commits = await _lost_commits(hub, run.consensus_acked)
            await writer_bus.close()
    report = _report(run, peers, links, lost, lost_commits, elapsed, nodes, seed)
    report.notes.insert(1, f"membership whole at the end (every host lists every host): {whole}")
    return report


async def _membership_whole(hub: Bus, names: list[str], within: float = 60.0) -> bool:
    """Whether every host's discovery lists every host, fresh, within ``within`` seconds."""

    async def whole() -> bool:
        for node in names:
            try:
                view = await hub.request(DISCOVERY_PEERS, PeerQuery(), node=node, timeout=2)
            except BusError:
                return False
            if view.stale or sorted(p.node for p in view.peers) != sorted(names):
                return False
        return True

    try:
        await eventually(whole, within=within, every=1.0)
    except AssertionError:
        return False
    return True


async def _lost_commits(hub: Bus, acked: list[int]) -> list[int]:
    """Acknowledged consensus writes that a linearizable read no longer finds."""
    lost = []
    for seq in acked:
        for attempt in range(20):
            try:
                entry = await hub.request(
                    CONSENSUS_GET, KvKey(key=f"soak/w{seq}"), node=WITNESS, timeout=5
                )
            except BusError:
                await asyncio.sleep(1 + attempt)
                continue
            if entry.value != str(seq):
                lost.append(seq)
            break
        else:
            lost.append(seq)
    return lost


async def _stored_seqs(ledger: KeyValue[LedgerEntry]) -> set[int]:
    """What the ledger holds, once the hub's JetStream answers again (it may be recovering)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            stored = {entry.seq for entry in (await ledger.values()).values()}
        except BusError:
            stored = set()
        if stored or time.monotonic() > deadline:
            return stored
        await asyncio.sleep(1)


def _report(
    run: Soak,
    peers: Recorder[PeerChange],
    links: Recorder[LinkChange],
    lost: list[int],
    lost_commits: list[int],
    elapsed: float,
    nodes: int,
    seed: int,
) -> Report:
    peer_events = Counter(change.kind for _, change in peers.events)
    link_events = Counter(change.link.state for _, change in links.events)
    memory_kib = {
        key: [[round(at, 1), rss] for at, rss in samples] for key, samples in run.memory.items()
    }
    return Report(
        "soak",
        [
            Metric(
                "acked_entries_lost",
                len(lost) + len(lost_commits),
                "entries",
                "value <= 0",
                note=f"{len(run.consensus_acked)} consensus writes acknowledged through "
                f"{WITNESS}'s consensus service ({run.consensus_failures} refused or timed out), "
                f"lost: {lost_commits[:20]}; {len(run.acked)} writes acknowledged by the hub's "
                f"JetStream through {WITNESS}'s leaf ({run.write_failures} refused or timed out), "
                f"lost: {lost[:20]}",
            ),
            Metric(
                "max_rss_growth_pct",
                rss_growth_pct(run.memory, elapsed),
                "%",
                note=f"resident memory of each service process from {WARMUP_S:g} s after its "
                "start to the end, the largest growth among processes alive for at least half "
                "the run",
            ),
            Metric("duration_s", elapsed, "s", "value >= 600"),
            Metric(
                "faults_injected",
                sum(n for kind, n in run.faults.items() if not kind.startswith("cut-")),
                "faults",
                note=", ".join(f"{kind}: {count}" for kind, count in sorted(run.faults.items())),
            ),
        ],
        notes=[
            f"{nodes} hosts, seed {seed}, a fault every {run.fault_every_s:g} s on average; "
            f"hub restarts are clean stops (SIGTERM) on the same store",
            f"peer events seen: {dict(peer_events)}",
            f"link events seen (by new state): {dict(link_events)}",
            f"memory KiB over time: {memory_kib}",
            *run.log,
        ],
    )


def main(argv: list[str]) -> int:
    """Parse the options, soak, write ``bench/results/soak.json``."""
    parser = argparse.ArgumentParser(prog="make soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds (default 1800)")
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--fault-every", type=float, default=20.0, help="mean seconds")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    report = asyncio.run(soak(args.duration, args.nodes, args.fault_every, args.seed))
    report.command = f"make soak SOAK_S={args.duration:g}"
    print(f"soak: wrote {report.write()}")
    for metric in report.metrics:
        print("   ", metric.as_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
