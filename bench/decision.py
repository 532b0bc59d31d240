"""Decision benchmark: make_decision latency and success on 5 hosts with none down and with one
down, and the completion time of a health sweep (Dijkstra-Scholten) over 10 hosts."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.kit.decision import DecisionLab, decision_lab
from tests.kit.waiting import eventually

from bench._report import Metric, Report, percentile
from meshmind.bus import Bus, BusError, BusSettings, Empty, configure_logging
from meshmind.bus.protocol import (
    CONSENSUS_CAS,
    CONSENSUS_STATUS,
    CONSENSUS_TRANSFER,
    DECISION_DECIDE,
    DECISION_SWEEP,
    DECISION_VOTE,
    DISCOVERY_PEERS,
    AnomalyInfo,
    AnomalyKind,
    DecideRequest,
    KvCas,
    LinkShape,
    PeerQuery,
    SweepRequest,
    TransferRequest,
    VoteRequest,
)
from meshmind.lab import node_names

CALLS = 200
FLOOR_CALLS = 100
TIMEOUT_MS = 2000
SWEEPS = 15
FAILURE_TEXT = 160
BENCH_ENV = {"DECISION_OUTCOME_S": "5", "LOG_LEVEL": "warning"}


@dataclass
class Calls:
    """The outcome of a series of make_decision calls."""

    latencies: list[float] = field(default_factory=list)
    """Of the calls that returned a committed decision."""
    failures: Counter[str] = field(default_factory=Counter)
    """Why the others did not, by the start of the error."""

    def summary(self) -> str:
        """The commonest failures, for a metric's note."""
        common = "; ".join(f"{n} x {why}" for why, n in self.failures.most_common(3))
        return f"failures: {common}" if common else "no failures"


async def decide_many(
    lab: DecisionLab, callers: list[str], kind: AnomalyKind, subject: str, tag: str
) -> Calls:
    """``CALLS`` make_decision calls, each a new occurrence, from the callers' own leaves in
    turn."""
    buses = [
        await Bus.connect(BusSettings(node_id=n, nats_url=lab.mesh.host(n).url), name="bench")
        for n in callers
    ]
    calls = Calls()
    try:
        for i in range(CALLS):
            bus = buses[i % len(buses)]
            request = DecideRequest(
                kind=kind, subject=subject, episode=f"{tag}-{i}", timeout_ms=TIMEOUT_MS
            )
            start = time.perf_counter()
            try:
                record = await bus.request(
                    DECISION_DECIDE, request, node=bus.node_id, timeout=TIMEOUT_MS / 1000 + 1
                )
            except BusError as error:
                calls.failures[str(error)[:FAILURE_TEXT]] += 1
                continue
            if record.seq is None:
                calls.failures["a decision without a log entry"] += 1
            else:
                calls.latencies.append((time.perf_counter() - start) * 1000)
    finally:
        for bus in buses:
            await bus.close()
    return calls


async def floor(lab: DecisionLab, caller: str, peer: str) -> list[Metric]:
    """What one make_decision is made of, each timed alone from ``caller``'s leaf: a vote
    asked of ``peer``, and the commit that claims and logs a decision."""
    bus = await Bus.connect(
        BusSettings(node_id=caller, nats_url=lab.mesh.host(caller).url), name="bench"
    )
    vote = VoteRequest(
        proposer=caller,
        anomaly=AnomalyInfo(kind="host-gone", subject=peer, episode="floor", evidence=[]),
        action="wait",
        target=peer,
    )
    votes: list[float] = []
    commits: list[float] = []
    try:
        for i in range(FLOOR_CALLS):
            start = time.perf_counter()
            await bus.request(DECISION_VOTE, vote, node=peer, timeout=5)
            votes.append((time.perf_counter() - start) * 1000)
            claim = KvCas(key=f"bench/floor/{i}", value="x", log_record="x", log_key=f"floor-{i}")
            start = time.perf_counter()
            await bus.request(CONSENSUS_CAS, claim, node=caller, timeout=10)
            commits.append((time.perf_counter() - start) * 1000)
    finally:
        await bus.close()
    note = f"{FLOOR_CALLS} calls from {caller}'s leaf, one at a time"
    return [
        Metric("vote_p50_ms", statistics.median(votes), "ms", note=f"{note}, asking {peer}"),
        Metric(
            "claim_commit_p50_ms",
            statistics.median(commits),
            "ms",
            note=f"{note}: a cas with its log record through {caller}'s consensus service",
        ),
    ]


async def leader_off(lab: DecisionLab, node: str) -> None:
    """Make sure ``node`` does not lead the consensus group."""
    status = await lab.hub.request(CONSENSUS_STATUS, Empty(), node="n1", timeout=10)
    if status.leader == node:
        await lab.hub.request(CONSENSUS_TRANSFER, TransferRequest(to="n1"), node=node, timeout=10)


async def five_hosts(run_dir: Path, report: Report) -> None:
    nodes = node_names(5)
    async with decision_lab(run_dir, nodes, actuators="dry-run", **BENCH_ENV) as lab:
        # No host down: n5's link is slow (150 ms each way), so the links to it are degraded
        # in every host's view and a decision about one of them is approvable.
        await leader_off(lab, "n5")
        lab.mesh.host("n5").link.set_shape(LinkShape(delay_ms=150))
        await asyncio.sleep(8)
        await leader_off(lab, "n5")
        report.metrics += await floor(lab, "n2", "n3")
        calls = await decide_many(lab, nodes[:4], "link-degraded", "n1.n5", "up")
        add_latency(report, calls, "", "no host down; n5's link 150 ms each way")

        lab.mesh.host("n5").link.set_shape(LinkShape())
        await lab.mesh.kill("n5")

        async def n5_gone_everywhere() -> bool:
            for node in nodes[:4]:
                peers = await lab.hub.request(DISCOVERY_PEERS, PeerQuery(), node=node)
                if "n5" in {p.node for p in peers.peers}:
                    return False
            return True

        await eventually(n5_gone_everywhere, within=30, every=0.5)
        calls = await decide_many(lab, nodes[:4], "host-gone", "n5", "down")
        add_latency(report, calls, "_one_host_down", "n5 killed (leaf and services)")


def add_latency(report: Report, calls: Calls, suffix: str, note: str) -> None:
    """The latency and success metrics of one series of calls."""
    latencies = calls.latencies
    note = f"{note}; {CALLS} calls; {calls.summary()}"
    p50 = statistics.median(latencies) if latencies else float("inf")
    success = len(latencies) / CALLS
    if not suffix:
        report.metrics += [
            Metric("make_decision_p50_ms", p50, "ms", "value <= 25", note=note),
            Metric(
                "make_decision_p99_ms",
                percentile(latencies, 99) if latencies else float("inf"),
                "ms",
                "value <= 100",
                note=note,
            ),
            Metric("success_rate", success, "ratio", "value >= 0.99", note=note),
        ]
        return
    report.metrics += [
        Metric("make_decision_p50_ms_one_host_down", p50, "ms", note=note),
        Metric("success_rate_one_host_down", success, "ratio", "value >= 0.95", note=note),
    ]


async def ten_host_sweep(run_dir: Path, report: Report) -> None:
    nodes = node_names(10)
    async with decision_lab(
        run_dir, nodes, actuators="dry-run", without=("meshmind_consensus",), **BENCH_ENV
    ) as lab:
        durations = []
        for i in range(SWEEPS):
            node = nodes[i % len(nodes)]
            result = await lab.hub.request(
                DECISION_SWEEP, SweepRequest(timeout_ms=20_000), node=node, timeout=25
            )
            if len(result.reports) == len(nodes):
                durations.append(result.duration_s)
        report.metrics.append(
            Metric(
                "sweep_completion_10_hosts_s",
                statistics.median(durations) if durations else float("inf"),
                "s",
                "value <= 0.5",
                note=f"median of {len(durations)} of {SWEEPS} sweeps that reached all 10 hosts, "
                "as the initiator times it; hosts run discovery, health-monitor and decision",
            )
        )


async def run() -> Report:
    """Both labs, one after the other."""
    configure_logging(BusSettings(node_id="bench", log_level="warning"), "bench")
    report = Report("decision")
    with tempfile.TemporaryDirectory(prefix="bench-decision-") as tmp:
        for part, names in ((five_hosts, FIVE_HOST_METRICS), (ten_host_sweep, SWEEP_METRICS)):
            try:
                await part(Path(tmp) / part.__name__, report)
            except (AssertionError, BusError, TimeoutError) as error:
                report.metrics += [
                    Metric(name, float("inf"), unit, target, note=f"not measured: {error!r}"[:300])
                    for name, unit, target in names
                ]
    return report


FIVE_HOST_METRICS = (
    ("make_decision_p50_ms", "ms", "value <= 25"),
    ("make_decision_p99_ms", "ms", "value <= 100"),
    ("success_rate", "ratio", "value >= 0.99"),
    ("success_rate_one_host_down", "ratio", "value >= 0.95"),
)
SWEEP_METRICS = (("sweep_completion_10_hosts_s", "s", "value <= 0.5"),)
