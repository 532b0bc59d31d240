"""meshctl fl: start federated jobs, see and watch their rounds, plot them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from meshmind.bus import Bus, BusError, Message
from meshmind.bus.protocol import (
    FL_JOB_EVENTS,
    FL_METRICS,
    FL_START,
    FL_STATUS,
    FlJobEvent,
    FlJobList,
    FlJobQuery,
    FlJobSpec,
    FlJobStatus,
    FlMode,
    FlRoundMetrics,
    StrategyName,
    Weighting,
)
from meshmind.ctl._mesh_client import CtlError, target_url, with_bus
from meshmind.ctl._render import console, error_console, print_json

fl_app = typer.Typer(help="Federated learning jobs: start, status, watch, plot.")

START_TIMEOUT_S = 120.0
"""A start builds the task's model and evaluates it before it answers (MiniLM: tens of s)."""

Url = Annotated[
    str | None,
    typer.Option("--url", help="A NATS server of the mesh (default: NATS_URL, else the lab hub)."),
]
LabDir = Annotated[
    Path,
    typer.Option("--run-dir", envvar="MESHMIND_LAB_DIR", help="Where the lab keeps its state."),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Node = Annotated[
    str | None, typer.Option("--node", help="Whose coordinator to ask (default: NODE_ID, else n1).")
]


def _fail(message: str) -> typer.Exit:
    error_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def _host(node: str | None) -> str:
    return node or os.environ.get("NODE_ID") or "n1"


def _dump(message: Message) -> dict[str, Any]:
    return message.model_dump(mode="json")


def _ask_status(url: str, node: str, job_id: str | None) -> FlJobList:
    async def ask(bus: Bus) -> FlJobList:
        return await bus.request(FL_STATUS, FlJobQuery(job_id=job_id), node=node, timeout=10)

    try:
        return with_bus(url, ask)
    except (BusError, CtlError) as error:
        raise _fail(f"no answer from {node}'s coordinator: {error}") from None


def jobs_table(jobs: list[FlJobStatus]) -> Table:
    """One line per job: progress, accuracy before and now, where it runs."""
    table = Table(title="federated jobs")
    for column in ("job", "state", "task", "mode", "round", "accuracy", "coordinator", "wall"):
        table.add_column(column)
    for job in jobs:
        last = job.history[-1] if job.history else None
        accuracy = f"{job.initial_accuracy:.3f}"
        if last is not None:
            accuracy += f" -> {last.accuracy:.3f}"
        wall = sum(m.wall_s for m in job.history)
        colour = {"running": "yellow", "done": "green", "failed": "red"}[job.state]
        table.add_row(
            job.job_id,
            f"[{colour}]{job.state}[/{colour}]",
            job.spec.task,
            f"{job.spec.mode}/{job.spec.strategy}/{job.spec.weighting}",
            f"{len(job.history)}/{job.spec.rounds}",
            accuracy,
            job.coordinator + (f" ({job.takeovers} takeover)" if job.takeovers else ""),
            f"{wall:.1f}s",
        )
    return table


def rounds_table(job: FlJobStatus) -> Table:
    """One line per round: accuracy, who took part with what weight and link, bytes, time."""
    table = Table(title=f"{job.job_id}: rounds")
    for column in ("round", "accuracy", "loss", "weights (link)", "rejected", "bytes", "wall"):
        table.add_column(column)
    for m in job.history:
        weights = ", ".join(
            f"{node} {weight:.2f} ({m.link_quality.get(node, 1.0):.2f})"
            for node, weight in sorted(m.weights.items())
        )
        table.add_row(
            str(m.round),
            f"{m.accuracy:.4f}",
            f"{m.loss:.4f}",
            weights,
            ", ".join(sorted(m.rejected)) or "-",
            f"{m.bytes_down + m.bytes_up:,}",
            f"{m.wall_s:.2f}s",
        )
    return table


@fl_app.command("start")
def start(
    task: Annotated[str, typer.Option(help="A registered task: digits, minilm-text.")] = "digits",
    rounds: Annotated[int, typer.Option(min=1, help="Aggregations to run.")] = 10,
    participants: Annotated[int, typer.Option(min=1, help="Trainers per round.")] = 5,
    min_updates: Annotated[int, typer.Option(min=1, help="Updates a round needs.")] = 1,
    strategy: Annotated[StrategyName, typer.Option(help="Aggregation strategy.")] = "fedavg",
    weighting: Annotated[Weighting, typer.Option(help="examples, or link quality too.")] = (
        "examples"
    ),
    mode: Annotated[FlMode, typer.Option(help="sync rounds, or buffered (FedBuff).")] = "sync",
    deadline_s: Annotated[float, typer.Option(help="A round's deadline, seconds.")] = 20.0,
    buffer_size: Annotated[
        int | None, typer.Option(min=1, help="Buffered: updates per version (half the trainers).")
    ] = None,
    max_staleness: Annotated[
        int, typer.Option(min=0, help="Buffered: versions an update may be behind.")
    ] = 4,
    remember: Annotated[
        bool, typer.Option(help="Buffered: every version counts each trainer's latest update.")
    ] = False,
    epochs: Annotated[int, typer.Option(min=1, help="Local epochs per round.")] = 2,
    lr: Annotated[float, typer.Option(help="Local learning rate.")] = 1e-2,
    seed: Annotated[int, typer.Option(min=0, help="Model and partition seed.")] = 0,
    label_skew: Annotated[
        float | None,
        typer.Option(help="Dirichlet label skew of the hosts' shares (digits): small is skewed."),
    ] = None,
    job_id: Annotated[str | None, typer.Option("--job-id", help="Default: generated.")] = None,
    node: Node = None,
    url: Url = None,
    run_dir: LabDir = Path(".meshmind/lab"),
    json_out: Json = False,
) -> None:
    """Start a federated job on a host's coordinator, which runs it while it holds the lease."""
    try:
        spec = FlJobSpec(
            job_id=job_id,
            task=task,
            rounds=rounds,
            participants=participants,
            min_updates=min_updates,
            strategy=strategy,
            weighting=weighting,
            mode=mode,
            deadline_s=deadline_s,
            buffer_size=buffer_size,
            max_staleness=max_staleness,
            remember=remember,
            epochs=epochs,
            lr=lr,
            seed=seed,
            label_skew=label_skew,
        )
    except ValueError as error:
        raise _fail(str(error)) from None
    host = _host(node)

    async def ask(bus: Bus) -> FlJobStatus:
        return await bus.request(FL_START, spec, node=host, timeout=START_TIMEOUT_S)

    try:
        status = with_bus(target_url(url, run_dir.resolve()), ask)
    except (BusError, CtlError) as error:
        raise _fail(f"{host}'s coordinator did not start the job: {error}") from None
    if json_out:
        print_json(_dump(status))
    else:
        console.print(
            f"started {status.job_id} on {status.coordinator}: {task}, {rounds} rounds, "
            f"accuracy before training {status.initial_accuracy:.4f}",
            highlight=False,
        )


@fl_app.command("status")
def status(
    job_id: Annotated[str | None, typer.Argument(help="One job (default: every job).")] = None,
    node: Node = None,
    url: Url = None,
    run_dir: LabDir = Path(".meshmind/lab"),
    json_out: Json = False,
) -> None:
    """Jobs as their checkpoints have them; with a job id, every round too."""
    found = _ask_status(target_url(url, run_dir.resolve()), _host(node), job_id)
    if json_out:
        print_json(_dump(found))
        return
    console.print(jobs_table(found.jobs))
    if job_id is not None:
        for job in found.jobs:
            console.print(rounds_table(job))


@fl_app.command("watch")
def watch(
    job_id: Annotated[str | None, typer.Argument(help="One job (default: every job).")] = None,
    node: Node = None,
    url: Url = None,
    run_dir: LabDir = Path(".meshmind/lab"),
    json_out: Json = False,
) -> None:
    """Follow jobs round by round (progress bars, or JSON lines) until they end."""
    target = target_url(url, run_dir.resolve())
    host = _host(node)

    async def follow(bus: Bus) -> None:
        found = await bus.request(FL_STATUS, FlJobQuery(job_id=job_id), node=host, timeout=10)
        jobs = {job.job_id: job for job in found.jobs if job_id or job.state == "running"}
        ended = asyncio.Event()
        progress = Progress(
            TextColumn("{task.fields[job]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            console=console,
            disable=json_out,
        )
        bars: dict[str, TaskID] = {}
        for job in jobs.values():
            bars[job.job_id] = progress.add_task(
                _described(job.history[-1].accuracy if job.history else job.initial_accuracy),
                total=job.spec.rounds,
                completed=len(job.history),
                job=job.job_id,
            )

        def check_ended() -> None:
            if all(job.state != "running" for job in jobs.values()):
                ended.set()

        async def on_metrics(metrics: FlRoundMetrics) -> None:
            if metrics.job_id not in bars:
                return
            if json_out:
                print(json.dumps(_dump(metrics), sort_keys=True), flush=True)
            progress.update(
                bars[metrics.job_id],
                completed=metrics.round,
                description=_described(metrics.accuracy),
            )

        async def on_event(event: FlJobEvent) -> None:
            if job_id is not None and event.job_id != job_id:
                return
            if json_out:
                print(json.dumps(_dump(event), sort_keys=True), flush=True)
            if event.kind == "started" and event.job_id not in jobs:
                fresh = await bus.request(
                    FL_STATUS, FlJobQuery(job_id=event.job_id), node=host, timeout=10
                )
                for job in fresh.jobs:
                    jobs[job.job_id] = job
                    bars[job.job_id] = progress.add_task(
                        _described(job.initial_accuracy), total=job.spec.rounds, job=job.job_id
                    )
            if event.kind in ("done", "failed") and event.job_id in jobs:
                state = "done" if event.kind == "done" else "failed"
                jobs[event.job_id] = jobs[event.job_id].model_copy(update={"state": state})
                check_ended()

        await bus.subscribe(FL_METRICS, on_metrics)
        await bus.subscribe(FL_JOB_EVENTS, on_event)
        await bus.flush()
        error_console.print(f"watching {job_id or 'federated jobs'} on {target}")
        if job_id is not None:
            check_ended()
        with progress:
            await ended.wait()

    with contextlib.suppress(KeyboardInterrupt):
        try:
            with_bus(target, follow)
        except (BusError, CtlError) as error:
            raise _fail(str(error)) from None


def _described(accuracy: float) -> str:
    return f"accuracy {accuracy:.4f}"


@fl_app.command("plot")
def plot(
    job_id: Annotated[str, typer.Argument(help="The job to plot.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the PNG files.")] = Path("."),
    node: Node = None,
    url: Url = None,
    run_dir: LabDir = Path(".meshmind/lab"),
) -> None:
    """PNG plots: accuracy per round, and aggregation weights against link quality."""
    from meshmind.ctl._fl_plot import plot_job  # matplotlib loads only for plots

    found = _ask_status(target_url(url, run_dir.resolve()), _host(node), job_id)
    for path in plot_job(found.jobs[0], out.resolve()):
        console.print(str(path), highlight=False, soft_wrap=True)
