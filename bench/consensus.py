"""Consensus benchmark: the consensus service's commit latency, throughput and failover on lab
meshes, against a JetStream R3 cluster and PySyncObj measured in the same run."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from tests.kit.raft_sim import run_seed

from bench import _jetstream_r3, _pysyncobj
from bench._cpu import by_program
from bench._meshmind_consensus import (
    BATCHED_WRITERS,
    SWEEP_WRITES,
    LabFigures,
    measure_failover,
    measure_lab,
)
from bench._report import Metric, Report, median
from meshmind.bus import BusSettings, configure_logging

SAMPLES = 300
"""Sequential writes per latency repetition."""
WRITES = 600
"""Writes per meshmind throughput repetition."""
PYSYNCOBJ_WRITES = 3000
"""Writes per PySyncObj throughput repetition (it runs far faster)."""
REPEATS = 3
CONCURRENCIES = (1, 8, 32, 128)
FAILOVERS = 3
SIM_SEEDS = 60
SHORT_ELECTION_TICKS = 5
CPUS = os.cpu_count() or 1
"""An election timeout of 0.5-1.0 s (ticks of 0.1 s), against the default's 1.0-2.0 s."""


class Unmeasured(Metric):
    """A metric this run could not measure: reported, not met, with the reason."""

    def as_json(self) -> dict[str, Any]:
        out = super().as_json()
        out["value"] = None
        out.pop("ratio", None)
        if self.target is not None:
            out["met"] = False
        return out


def sim_seeds_per_s(seeds: int) -> float:
    """Seeds of the Raft simulator (faults, checks and all) run per second."""
    start = time.perf_counter()
    for seed in range(seeds):
        run_seed(seed)
    return seeds / (time.perf_counter() - start)


async def lab_or_reason(work: Awaitable[LabFigures]) -> LabFigures | str:
    """The lab's figures, or why it could not be measured."""
    try:
        return await work
    except Exception as error:
        return f"the consensus service could not be measured: {type(error).__name__}: {error}"


def lab_metric(
    figures: LabFigures | str,
    name: str,
    pick: str,
    unit: str,
    target: str | None,
    baseline_name: str | None,
    baseline: float | None,
    note: str | None = None,
) -> Metric:
    """A metric from a lab's figures (the median of its repetitions of ``pick``), or an
    unmeasured one carrying the lab's failure."""
    if isinstance(figures, str):
        return Unmeasured(name, 0.0, unit, target, baseline_name, baseline, note=figures)
    value = median(getattr(figures, pick))
    return Metric(name, value, unit, target, baseline_name, baseline, note=note)


def cpu_split(figures: LabFigures | str) -> str:
    """The CPU per write of each program of a lab's runs, medians over its repetitions."""
    if isinstance(figures, str):
        return ""
    runs = figures.cpu_ms_per_write_by_program
    programs = sorted({name for run in runs for name in run})
    medians = {name: median([run.get(name, 0.0) for run in runs]) for name in programs}
    own = "the benchmark's process (requesters, link emulators)"
    return "; meshmind's ms by program: " + by_program(medians, own=own)


def lab_note(label: str, figures: LabFigures | str) -> str:
    """What one lab measured, sample by sample."""
    if isinstance(figures, str):
        return f"{label}: {figures}"
    sweep = ", ".join(f"{c}: {tp:.0f}/s" for c, tp in figures.sweep.items())
    text = (
        f"{label}: requests to {figures.entry_host}'s endpoint; concurrency sweep "
        f"({SWEEP_WRITES} writes each) {sweep}, best {figures.concurrency}; "
        f"p50 {', '.join(f'{v:.2f}' for v in figures.p50_ms)} ms; "
        f"p99 {', '.join(f'{v:.2f}' for v in figures.p99_ms)} ms; "
        f"throughput one request per write "
        f"{', '.join(f'{v:.0f}' for v in figures.single_throughput)} writes/s, "
        f"batched {', '.join(f'{v:.0f}' for v in figures.throughput)} writes/s with "
        f"{', '.join(f'{v:.1f}' for v in figures.writes_per_request)} writes a request"
    )
    if figures.failover_s:
        text += f"; failover {', '.join(f'{v:.3f}' for v in figures.failover_s)} s"
    if figures.retried:
        text += f"; repetitions made again after a failed write: {'; '.join(figures.retried)}"
    return text


async def run() -> Report:
    """Baselines first, then the simulator, then the service on 3 and 5 hosts with each
    backend."""
    configure_logging(BusSettings(log_level="warning"), "bench")
    pysyncobj_logs = _pysyncobj.count_pysyncobj_logs()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        js = await _jetstream_r3.measure(run_dir / "jetstream-r3", SAMPLES, REPEATS)
        ps = {
            size: await _pysyncobj.measure(
                run_dir / "pysyncobj",
                size,
                samples=SAMPLES,
                writes=PYSYNCOBJ_WRITES,
                repeats=REPEATS,
            )
            for size in (3, 5)
        }
        sim = [sim_seeds_per_s(SIM_SEEDS) for _ in range(REPEATS)]
        lab = {"samples": SAMPLES, "writes": WRITES, "repeats": REPEATS}
        raft3 = await lab_or_reason(
            measure_lab(
                run_dir / "raft-3",
                3,
                "raft",
                concurrencies=CONCURRENCIES,
                failover_repeats=FAILOVERS,
                **lab,
            )
        )
        raft5 = await lab_or_reason(
            measure_lab(run_dir / "raft-5", 5, "raft", concurrencies=CONCURRENCIES, **lab)
        )
        jetstream3 = await lab_or_reason(
            measure_lab(run_dir / "jetstream-3", 3, "jetstream", concurrencies=CONCURRENCIES, **lab)
        )
        short_elections = await lab_or_reason(
            measure_failover(
                run_dir / "raft-3-short-elections",
                3,
                FAILOVERS,
                CONSENSUS_ELECTION_TICKS=str(SHORT_ELECTION_TICKS),
            )
        )

    js_p50, js_p99, js_failover = median(js.p50_ms), median(js.p99_ms), median(js.failover_s)
    ps3_mode, ps3_tp = ps[3].best_throughput()
    ps5_mode, ps5_tp = ps[5].best_throughput()
    raft3_tp = None if isinstance(raft3, str) else median(raft3.throughput)
    concurrency = {
        name: f"; one request per write from {figures.concurrency} requesters (the sweep's best)"
        for name, figures in (("raft3", raft3), ("raft5", raft5))
        if not isinstance(figures, str)
    }
    batched = (
        f"{BATCHED_WRITERS} writers at once through one BatchingWriter, which sends the "
        "writes made while its requests are out as one batch request (two out at most)"
    )
    metrics = [
        lab_metric(
            raft3,
            "commit_p50_ms_3_hosts",
            "p50_ms",
            "ms",
            "ratio <= 2.0",
            "jetstream_r3_publish_p50_ms",
            js_p50,
        ),
        lab_metric(
            raft3,
            "commit_p99_ms_3_hosts",
            "p99_ms",
            "ms",
            None,
            "jetstream_r3_publish_p99_ms",
            js_p99,
        ),
        lab_metric(
            raft3,
            "throughput_3_hosts",
            "throughput",
            "writes/s",
            "ratio >= 1.0",
            "pysyncobj_throughput_3_hosts",
            ps3_tp,
            note=f"{batched}; PySyncObj in its {ps3_mode} mode",
        ),
        lab_metric(
            raft5,
            "throughput_5_hosts",
            "throughput",
            "writes/s",
            "ratio >= 1.0",
            "pysyncobj_throughput_5_hosts",
            ps5_tp,
            note=f"{batched}; PySyncObj in its {ps5_mode} mode",
        ),
        *(
            lab_metric(
                figures,
                f"throughput_single_requests_{size}_hosts",
                "single_throughput",
                "writes/s",
                None,
                f"pysyncobj_throughput_{size}_hosts",
                tp,
                note="one put request per write" + concurrency.get(name, ""),
            )
            for size, figures, tp, name in (
                (3, raft3, ps3_tp, "raft3"),
                (5, raft5, ps5_tp, "raft5"),
            )
        ),
        *(
            lab_metric(
                figures,
                f"cpu_ms_per_write_single_requests_{size}_hosts",
                "single_cpu_ms_per_write",
                "ms",
                None,
                f"pysyncobj_cpu_ms_per_write_{size}_hosts",
                median(ps[size].cpu_ms_per_write[mode]),
                note="the same, during the runs of one request per write",
            )
            for size, figures, mode in ((3, raft3, ps3_mode), (5, raft5, ps5_mode))
        ),
        *(
            lab_metric(
                figures,
                f"cpu_ms_per_write_{size}_hosts",
                "cpu_ms_per_write",
                "ms",
                None,
                f"pysyncobj_cpu_ms_per_write_{size}_hosts",
                median(ps[size].cpu_ms_per_write[mode]),
                note=f"CPU time of every process of the run (servers, services, emulated "
                f"links, the writers) per acknowledged write, during the batched throughput "
                f"runs; "
                f"PySyncObj in its {mode} mode (nodes and client). On {CPUS} cores, "
                f"{CPUS} s of CPU a second divided by this bounds the throughput"
                + cpu_split(figures),
            )
            for size, figures, mode in ((3, raft3, ps3_mode), (5, raft5, ps5_mode))
        ),
        lab_metric(
            raft5,
            "commit_p50_ms_5_hosts",
            "p50_ms",
            "ms",
            None,
            "pysyncobj_commit_p50_ms_5_hosts",
            median(ps[5].p50_ms),
            note="PySyncObj: set(..., sync=True) in its no-batch mode",
        ),
        lab_metric(
            raft3,
            "failover_s",
            "failover_s",
            "s",
            "value <= 1.0",
            "jetstream_r3_failover_s",
            js_failover,
            note="kill -9 of the leader's services (the JetStream stream leader's server); "
            "a write every 20 ms through another host (server), each with a 1 s deadline; "
            "seconds from the kill to the first acknowledged write",
        ),
        lab_metric(
            short_elections,
            "failover_s_election_ticks_5",
            "failover_s",
            "s",
            None,
            "failover_s",
            median(raft3.failover_s) if not isinstance(raft3, str) else None,
            note=f"the same kills with CONSENSUS_ELECTION_TICKS={SHORT_ELECTION_TICKS} (an "
            "election timeout of 0.5-1.0 s): the followers find a killed leader's service "
            "gone after 3 ticks of silence either way, so the timeout, which the default "
            "keeps at 1.0-2.0 s for links of hundreds of ms, bounds only a silent cut",
        ),
        lab_metric(
            jetstream3,
            "jetstream_backend_commit_p50_ms_3_hosts",
            "p50_ms",
            "ms",
            None,
            "jetstream_r3_publish_p50_ms",
            js_p50,
            note="the jetstream backend through the service's put endpoint; the lab's hub is "
            "one server, so its bucket has 1 replica and the hub's default sync_interval "
            "(not the baseline's 3 replicas fsyncing every write)",
        ),
        lab_metric(
            jetstream3,
            "jetstream_backend_throughput_3_hosts",
            "throughput",
            "writes/s",
            None,
            "throughput_3_hosts",
            raft3_tp,
            note=f"{batched}; the backend writes each key's writes in turn, the keys' at once",
        ),
        Metric(
            "sim_seeds_per_s",
            median(sim),
            "seeds/s",
            note=f"seeds 0-{SIM_SEEDS - 1} of tests/kit/raft_sim.py, {REPEATS} times; one "
            "seed is a whole simulated cluster run with crashes, partitions, membership "
            "changes and the safety and linearizability checks",
        ),
    ]
    logged = ", ".join(f"'{m}…' x{n}" for m, n in pysyncobj_logs.messages.items())
    return Report(
        "consensus",
        metrics,
        notes=[
            f"every figure is the median of {REPEATS} repetitions ({SAMPLES} sequential "
            f"writes per latency repetition; failover {FAILOVERS} kills for meshmind, "
            f"{REPEATS} fresh clusters for JetStream); 16-byte values; all processes share "
            "this machine's cores",
            "durability: meshmind's Raft journal fsyncs every batch, so the JetStream R3 "
            "servers run with sync_interval: always; PySyncObj's journal file is a memory "
            "map it never syncs while running (its only durability setting)",
            "JetStream R3: 3 clustered nats-server processes, a 3-replica file stream, nats-py "
            "publishing acked one at a time from a client on the stream leader's server; "
            f"p50 {', '.join(f'{v:.2f}' for v in js.p50_ms)} ms, "
            f"p99 {', '.join(f'{v:.2f}' for v in js.p99_ms)} ms, "
            f"failover {', '.join(f'{v:.3f}' for v in js.failover_s)} s",
            "PySyncObj: one process per node with a ReplDict and journal file, this process "
            "a read-only node (SyncObj(None, nodes)); latency of set(..., sync=True) in "
            "no-batch mode, throughput of sets issued at once counted by callbacks in both "
            "modes, the faster reported; "
            + "; ".join(
                f"{size} nodes p50 {', '.join(f'{v:.2f}' for v in figures.p50_ms)} ms, "
                + ", ".join(
                    f"{mode} {'/'.join(f'{v:.0f}' for v in samples)} writes/s"
                    for mode, samples in figures.throughput.items()
                )
                for size, figures in ps.items()
            )
            + (f"; PySyncObj logged {logged}" if logged else "")
            + "".join(
                f"; repetition made again ({reason})"
                for figures in ps.values()
                for reason in figures.retried
            ),
            "meshmind: the consensus service on lab meshes (a hub, one leaf per host behind "
            "its link emulator, no shaping: every Raft message crosses two emulated links, "
            "leaf to hub to leaf), default timing (tick 0.1 s, election after 10-20 ticks); "
            "latency of put requests one at a time; throughput of puts from N concurrent "
            "requesters, one request each, and of puts from "
            f"{BATCHED_WRITERS} writers sharing batch requests",
            lab_note("raft, 3 hosts", raft3),
            lab_note("raft, 5 hosts", raft5),
            lab_note("jetstream backend, 3 hosts", jetstream3),
        ],
    )
