"""FL benchmark: meshmind against Flower on the same task, partitions and seeds; adapter and
object-store costs; link-aware time to target against synchronous FedAvg; 20 % churn."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import flwr
from tests.kit.fl import (
    TRAINER,
    fedavg_accuracies,
    fedavg_in_process,
    fl_lab,
    start_job,
    wait_for_round_metrics,
    wait_until_done,
)
from tests.kit.recorder import Recorder
from tests.kit.waiting import eventually

from bench._cpu import by_program, cpu_used_since, tree_cpu_by_program
from bench._report import Metric, Report, percentile
from bench._virtual_fl import Timing, median_ratio, slow_pairs
from bench._virtual_fl import time_to as timeline_time_to
from meshmind.bus import Bus, BusSettings, configure_logging
from meshmind.bus.protocol import (
    FL_METRICS,
    FL_STORE,
    FlJobSpec,
    FlJobStatus,
    FlRoundMetrics,
    LinkShape,
)
from meshmind.federation import HostData, MeasuredLink, host_link_quality, update_object
from meshmind.fl import (
    MiniLMTextTask,
    TaskSession,
    adapter_size,
    encode_adapter,
)
from meshmind.health import read_links
from meshmind.lab import LocalMesh, free_ports, node_names

NODES = node_names(5)
ROUNDS = 6
EPOCHS = 2
LR = 1e-2
SEED = 0


@dataclass(frozen=True)
class Skew:
    """How the digits are shared among the hosts, and the accuracy to time against it."""

    label_skew: float | None
    target: float
    suffix: str
    """Appended to the metric names; the task's own skew has none."""


SKEWS = (
    Skew(None, 0.89, ""),  # Dirichlet 0.5: sync FedAvg reaches 0.89 in round 2 of 6
    Skew(5.0, 0.91, "_skew5"),  # milder: sync FedAvg reaches 0.91 in round 3 of 6
)
SLOW = ("n4", "n5")
SLOW_SHAPE = LinkShape(delay_ms=400)
BUFFERED_VERSIONS = 3 * ROUNDS
"""A buffered version holds 3 updates where a synchronous round holds 5: more of them."""
MAX_STALENESS = 20
PUT_GETS = 60
REST_S = 5.0
"""How long the lab's CPU use is measured with no job."""
CORES = os.cpu_count() or 1
FLOWER_START_S = 120.0


def sync_spec(
    job_id: str,
    *,
    min_updates: int = 5,
    deadline_s: float = 60.0,
    label_skew: float | None = None,
) -> FlJobSpec:
    return FlJobSpec(
        job_id=job_id,
        task="digits",
        rounds=ROUNDS,
        participants=len(NODES),
        min_updates=min_updates,
        strategy="fedavg",
        weighting="examples",
        deadline_s=deadline_s,
        epochs=EPOCHS,
        lr=LR,
        seed=SEED,
        label_skew=label_skew,
    )


def link_aware_spec(job_id: str, label_skew: float | None) -> FlJobSpec:
    """Buffered, link-weighted; a slow host's update (about 8 versions old when it lands
    behind a 400 ms link) counts, and counts on until it is ``max_staleness`` old."""
    return sync_spec(job_id, label_skew=label_skew).model_copy(
        update={
            "rounds": BUFFERED_VERSIONS,
            "weighting": "link",
            "mode": "buffered",
            "buffer_size": 3,
            "max_staleness": MAX_STALENESS,
            "remember": True,
            "deadline_s": 30.0,
        }
    )


@dataclass(frozen=True)
class FlowerRun:
    """The Flower baseline's rounds as its server saw them."""

    accuracy: list[float]
    wall_s: list[float]
    bytes: list[int]


async def listening(port: int, *, within: float) -> None:
    """Until something accepts connections on loopback ``port``."""

    async def accepts() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    await eventually(accepts, within=within, every=0.2)


async def flower_run(run_dir: Path) -> FlowerRun:
    """Flower's FedAvg over gRPC: a server and one client process per host, as the lab runs."""
    port = free_ports(1)[0]
    out = run_dir / "flower.json"
    common = ["--port", str(port), "--rounds", str(ROUNDS), "--clients", str(len(NODES))]
    common += ["--epochs", str(EPOCHS), "--lr", str(LR), "--seed", str(SEED)]
    node = (sys.executable, "-m", "bench._flower_node")
    log = (run_dir / "flower.log").open("wb")
    server = await asyncio.create_subprocess_exec(
        *node, "server", *common, "--out", str(out), stdout=log, stderr=log
    )
    await listening(port, within=FLOWER_START_S)  # a client that finds no server gives up
    clients = [
        await asyncio.create_subprocess_exec(
            *node, "client", *common, "--index", str(i), stdout=log, stderr=log
        )
        for i in range(len(NODES))
    ]
    try:
        async with asyncio.timeout(FLOWER_START_S + 60 * ROUNDS):
            code = await server.wait()
            await asyncio.gather(*(c.wait() for c in clients))
    finally:
        for process in (server, *clients):
            if process.returncode is None:
                process.kill()
                await process.wait()
        log.close()
    if code != 0:
        raise RuntimeError(f"the Flower server exited {code}; see {run_dir / 'flower.log'}")
    rounds = json.loads(out.read_text())["rounds"]
    return FlowerRun(
        accuracy=[r["accuracy"] for r in rounds],
        wall_s=[r["wall_s"] for r in rounds],
        bytes=[r["bytes"] for r in rounds],
    )


def time_to(status: FlJobStatus, target: float) -> float | None:
    """Seconds from the job's start to its first global adapter at ``target`` accuracy."""
    timeline = [(metrics.at - status.started_at, metrics.accuracy) for metrics in status.history]
    return timeline_time_to(timeline, target)


def job_wall_s(status: FlJobStatus) -> float:
    return status.history[-1].at - status.started_at


@dataclass(frozen=True)
class StoreTimes:
    """Object Store operations on one adapter, in milliseconds."""

    size: int
    puts: list[float]
    gets: list[float]


async def object_store_times(mesh: LocalMesh) -> StoreTimes:
    """Put and get times of one digits adapter, from a host's leaf as a trainer does them;
    the first few (connection warm-up) left out."""
    data = encode_adapter(TaskSession("digits", SEED, HostData(0, len(NODES))).initial).data
    bus = await Bus.connect(BusSettings(node_id="n1", nats_url=mesh.host("n1").url), name="b")
    puts: list[float] = []
    gets: list[float] = []
    try:
        store = await bus.hub().object_store(FL_STORE)
        for i in range(PUT_GETS):
            name = update_object("bench-store", i + 1, i, "n1")
            start = time.perf_counter()
            await store.put(name, data)
            middle = time.perf_counter()
            assert await store.get(name) == data
            puts.append((middle - start) * 1000)
            gets.append((time.perf_counter() - middle) * 1000)
    finally:
        await bus.close()
    return StoreTimes(len(data), puts[5:], gets[5:])


@contextlib.asynccontextmanager
async def slow_links(mesh: LocalMesh, bus: Bus, nodes: Sequence[str]) -> AsyncIterator[None]:
    """``nodes`` behind degraded links, once the health-monitor has measured them so."""
    for node in nodes:
        mesh.host(node).link.set_shape(SLOW_SHAPE)

    async def measured() -> bool:
        checked = await read_links(bus)
        links = [MeasuredLink(r.source, r.target, r.score) for r in checked.accepted]
        qualities = [host_link_quality(links, node) for node in nodes]
        return all(q is not None and q < 0.5 for q in qualities)

    try:
        await eventually(measured, within=120, every=1.0)
        yield
    finally:
        for node in nodes:
            mesh.host(node).link.set_shape(LinkShape())


async def run_job(bus: Bus, spec: FlJobSpec) -> FlJobStatus:
    await start_job(bus, "n1", spec)
    assert spec.job_id is not None
    return await wait_until_done(bus, spec.job_id, NODES, within=1200)


async def churned_job(mesh: LocalMesh, bus: Bus, spec: FlJobSpec, after: int) -> FlJobStatus:
    """``spec`` with n2's trainer killed as soon as ``after`` rounds are in."""
    rounds = await Recorder.start(bus, FL_METRICS)
    await start_job(bus, "n1", spec)
    assert spec.job_id is not None
    await wait_for_round_metrics(rounds, spec.job_id, after, within=600)
    await mesh.host("n2").services[TRAINER].kill()
    return await wait_until_done(bus, spec.job_id, NODES, within=1200)


@dataclass(frozen=True)
class LabCpu:
    """CPU milliseconds each program of the lab used: per steady round, and per second of
    rest."""

    per_round: dict[str, float]
    at_rest: dict[str, float]

    @property
    def round_s(self) -> float:
        return sum(self.per_round.values()) / 1000


async def lab_at_rest() -> dict[str, float]:
    """CPU milliseconds a second each program uses while no job runs."""
    before = tree_cpu_by_program()
    await asyncio.sleep(REST_S)
    return cpu_used_since(before, round(REST_S))


async def measured_job(bus: Bus, spec: FlJobSpec) -> tuple[FlJobStatus, dict[str, float]]:
    """``spec`` run, and the CPU milliseconds per round each program used from the end of
    round 1 (which builds the task's models) to the end of the last round: read as their
    metrics arrive, so that no polling adds to what is measured."""
    assert spec.job_id is not None
    marks: dict[int, dict[str, float]] = {}
    last = asyncio.Event()

    async def on_metrics(metrics: FlRoundMetrics) -> None:
        if metrics.job_id == spec.job_id and metrics.round in (1, spec.rounds):
            marks.setdefault(metrics.round, tree_cpu_by_program())
            if metrics.round == spec.rounds:
                last.set()

    await bus.subscribe(FL_METRICS, on_metrics)
    await bus.flush()
    await start_job(bus, "n1", spec)
    await asyncio.wait_for(last.wait(), 600)
    used = {
        name: (total - marks[1].get(name, 0.0)) * 1e3 / (spec.rounds - 1)
        for name, total in marks[spec.rounds].items()
    }
    return await wait_until_done(bus, spec.job_id, NODES, within=1200), used


def cpu_metric(cpu: LabCpu, flower_wall_s: float) -> Metric:
    floor = cpu.round_s / CORES
    own = "the benchmark's process (link emulators, observer)"
    return Metric(
        "round_cpu_s",
        cpu.round_s,
        "s",
        note=f"CPU of every process of the 5-host lab per synchronous round (rounds 2-{ROUNDS}); "
        f"on {CORES} cores no round can take less than {floor:.3f} s "
        f"({floor / flower_wall_s:.2f} x Flower's round wall); ms by program: "
        f"{by_program(cpu.per_round, own=own, digits=1)}; at rest, with no job, the lab "
        f"uses {sum(cpu.at_rest.values()):.0f} ms of CPU a second: "
        f"{by_program(cpu.at_rest, own=own, digits=0)}",
    )


def accuracy_note(status: FlJobStatus) -> str:
    path = " ".join(f"{m.accuracy:.3f}" for m in status.history)
    return f"{status.job_id}: {status.initial_accuracy:.3f} then {path}"


async def run() -> Report:
    configure_logging(BusSettings(node_id="bench", log_level="warning"), "bench")
    report = Report("fl")
    minilm = adapter_size(MiniLMTextTask().build_model(SEED))
    report.metrics.append(
        Metric(
            "minilm_adapter_bytes",
            minilm.adapter_bytes,
            "bytes",
            target=None,
            baseline_name="minilm_full_model_bytes",
            baseline=minilm.model_bytes,
        )
    )
    fast = [i for i, node in enumerate(NODES) if node not in SLOW]
    fast_only = fedavg_in_process(fast, len(NODES), rounds=ROUNDS, epochs=EPOCHS, lr=LR, seed=SEED)
    with tempfile.TemporaryDirectory(prefix="bench-fl-") as tmp:
        flower = await flower_run(Path(tmp))
        async with fl_lab(Path(tmp) / "lab", NODES) as (mesh, bus):
            store = await object_store_times(mesh)
            at_rest = await lab_at_rest()
            steady, per_round = await measured_job(bus, sync_spec("steady"))
            compared: list[tuple[Skew, FlJobStatus, FlJobStatus]] = []
            async with slow_links(mesh, bus, SLOW):
                for skew in SKEWS:
                    job = f"slow{skew.suffix.replace('_', '-')}"
                    waiting = await run_job(
                        bus, sync_spec(f"sync-{job}", label_skew=skew.label_skew)
                    )
                    link_aware = await run_job(
                        bus, link_aware_spec(f"aware-{job}", skew.label_skew)
                    )
                    compared.append((skew, waiting, link_aware))
            churned = await churned_job(
                mesh, bus, sync_spec("churned", min_updates=3, deadline_s=10.0), after=3
            )

    ours_wall = statistics.median(m.wall_s for m in steady.history[1:])
    flower_wall = statistics.median(flower.wall_s[1:])
    ours_bytes = statistics.median(m.bytes_up + m.bytes_down for m in steady.history)
    report.metrics += [
        Metric(
            "final_accuracy",
            steady.history[-1].accuracy,
            "accuracy",
            target="value >= " + f"{flower.accuracy[-1] - 0.01:.4f}",
            baseline_name="flower_final_accuracy",
            baseline=flower.accuracy[-1],
        ),
        Metric(
            "round_wall_s",
            ours_wall,
            "s",
            target="ratio <= 1.0",
            baseline_name="flower_round_wall_s",
            baseline=flower_wall,
            note="median of rounds 2 on (round 1 also waits for Flower's clients to connect)",
        ),
        cpu_metric(LabCpu(per_round, at_rest), flower_wall),
        Metric(
            "bytes_per_round",
            ours_bytes,
            "bytes",
            baseline_name="flower_bytes_per_round",
            baseline=statistics.median(flower.bytes),
            note="adapter bytes down to and up from 5 trainers",
        ),
        Metric(
            "object_store_put_get_p95_ms",
            percentile(store.puts + store.gets, 95),
            "ms",
            target="value <= 15",
            note=f"{len(store.puts)} puts and gets each of a {store.size}-byte adapter, "
            "from a host's leaf",
        ),
        Metric("object_store_put_p95_ms", percentile(store.puts, 95), "ms"),
        Metric("object_store_get_p95_ms", percentile(store.gets, 95), "ms"),
        *(m for skew, waiting, aware in compared for m in link_aware_metrics(skew, waiting, aware)),
        *(slow_pairs_metric(skew, waiting, aware) for skew, waiting, aware in compared),
        Metric(
            "fedavg_fast_hosts_only_accuracy",
            fast_only,
            "accuracy",
            note=f"{ROUNDS} FedAvg rounds without the slow hosts' data, computed in-process: "
            "how far the hosts with good links can take the adapter on their own",
        ),
        no_worse(
            ("final_accuracy_churn_20pct", churned),
            ("final_accuracy_no_churn", steady),
            0.02,
            "n2's trainer killed after round 3 of 6",
        ),
    ]
    report.notes += [
        f"Flower {flwr.__version__}: FedAvg, start_server/start_client over gRPC on loopback; "
        f"meshmind: the 5-host secure lab; same digits task, partitions and seed {SEED}, "
        f"{ROUNDS} rounds of {EPOCHS} local epochs at lr {LR}",
        "flower accuracy: " + " ".join(f"{a:.3f}" for a in flower.accuracy),
        *(accuracy_note(s) for s in (steady, *(j for c in compared for j in c[1:]), churned)),
    ]
    return report


def no_worse(
    ours: tuple[str, FlJobStatus], theirs: tuple[str, FlJobStatus], points: float, note: str
) -> Metric:
    """A job's final accuracy, met when at most ``points`` below the other job's."""
    baseline = theirs[1].history[-1].accuracy
    return Metric(
        ours[0],
        ours[1].history[-1].accuracy,
        "accuracy",
        target=f"value >= {baseline - points:.4f}",
        baseline_name=theirs[0],
        baseline=baseline,
        note=note,
    )


def link_aware_metrics(skew: Skew, waiting: FlJobStatus, link_aware: FlJobStatus) -> list[Metric]:
    """Time to ``skew.target`` and final accuracy, link-aware against synchronous FedAvg."""
    slow = f"{len(SLOW)} of {len(NODES)} hosts behind {SLOW_SHAPE.delay_ms:g} ms one-way links"
    shares = "the task's own label skew (Dirichlet 0.5)"
    if skew.label_skew is not None:
        shares = f"label skew Dirichlet {skew.label_skew:g}"
    ours = time_to(link_aware, skew.target)
    theirs = time_to(waiting, skew.target)
    note = f"target accuracy {skew.target}; {slow}; {shares}"
    reached = ours is not None and theirs is not None
    if ours is None:
        ours = job_wall_s(link_aware)
        note += f"; the link-aware job never reached it in {BUFFERED_VERSIONS} versions "
        note += "(value: its whole run, a lower bound; not met)"
    if theirs is None:
        theirs = job_wall_s(waiting)
        note += f"; synchronous FedAvg never reached it in {ROUNDS} rounds (baseline: its run)"
    return [
        Metric(
            f"time_to_target_link_aware{skew.suffix}_s",
            ours,
            "s",
            target="ratio <= 0.6",
            baseline_name=f"time_to_target_sync_fedavg{skew.suffix}_s",
            baseline=theirs,
            note=note,
            reached=reached,
        ),
        no_worse(
            (f"final_accuracy_link_aware{skew.suffix}", link_aware),
            (f"final_accuracy_sync_fedavg{skew.suffix}", waiting),
            0.01,
            f"{slow}; {shares}",
        ),
    ]


def slow_pairs_metric(skew: Skew, waiting: FlJobStatus, link_aware: FlJobStatus) -> Metric:
    """How many of the 10 pairs of slow hosts the link-aware targets hold for, replayed in
    process on a virtual clock with the timings these two lab jobs measured."""
    versions = link_aware.history
    timing = Timing(
        fast_cycle_s=statistics.median(b.at - a.at for a, b in itertools.pairwise(versions)),
        slow_cycle_s=statistics.median(m.wall_s for m in waiting.history[1:]),
        slow_link_quality=statistics.median(
            m.link_quality[node] for m in versions for node in SLOW if node in m.link_quality
        ),
    )
    sync = fedavg_accuracies(
        range(len(NODES)),
        len(NODES),
        rounds=ROUNDS,
        epochs=EPOCHS,
        lr=LR,
        seed=SEED,
        label_skew=skew.label_skew,
    )
    sync_round = next((i for i, accuracy in enumerate(sync) if accuracy >= skew.target), None)
    if sync_round is None:
        raise RuntimeError(f"synchronous FedAvg never reaches {skew.target} in process")
    sync_s = sync_round * timing.slow_cycle_s
    outcomes = slow_pairs(timing, link_aware.spec, skew.target)
    met = [o for o in outcomes if o.ratio(sync_s) <= 0.6 and o.final_accuracy >= sync[-1] - 0.01]
    each = ", ".join(
        f"{'+'.join(NODES[i] for i in o.slow)} {o.ratio(sync_s):.2f}/{o.final_accuracy:.3f}"
        for o in outcomes
    )
    return Metric(
        f"link_aware_slow_pairs_met{skew.suffix}",
        len(met),
        "pairs",
        note=f"of {len(outcomes)} pairs of slow hosts, those where the link-aware job reaches "
        f"{skew.target} in at most 0.6 of synchronous FedAvg's time ({sync_s:.2f} s) and ends "
        f"within 0.01 of its {sync[-1]:.3f}; replayed in process on a virtual clock (fast "
        f"trainer cycle {timing.fast_cycle_s:.3f} s, slow {timing.slow_cycle_s:.3f} s, slow "
        f"link quality {timing.slow_link_quality:.2f}, as the lab jobs measured); median "
        f"time ratio {median_ratio(outcomes, sync_s):.2f}; each pair's time ratio/final "
        f"accuracy (inf: never reached): {each}",
    )
