"""PNG plots of a federated job: accuracy per round, and weights against link quality."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from meshmind.bus.protocol import FlJobStatus


def _figure() -> Figure:
    """A figure drawn by Agg alone: no pyplot, no display, no global state."""
    figure = Figure(figsize=(6, 4))
    FigureCanvasAgg(figure)
    return figure


def plot_accuracy(status: FlJobStatus, path: Path) -> Path:
    """Test accuracy of the global adapter before any round and after each."""
    rounds = [0, *(m.round for m in status.history)]
    accuracy = [status.initial_accuracy, *(m.accuracy for m in status.history)]
    figure = _figure()
    axes = figure.subplots()
    axes.plot(rounds, accuracy, marker="o")
    for m in status.history:
        if m.coordinator != status.history[0].coordinator:
            axes.axvline(m.round, color="grey", linestyle=":", linewidth=0.8)
            break
    axes.set_xlabel("round")
    axes.set_ylabel("test accuracy")
    spec = status.spec
    axes.set_title(f"{status.job_id}: {spec.task}, {spec.strategy}, {spec.mode}, {spec.weighting}")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def plot_weights(status: FlJobStatus, path: Path) -> Path:
    """Every participant's share of every round against the link quality behind it."""
    figure = _figure()
    axes = figure.subplots()
    nodes = sorted({node for m in status.history for node in m.weights})
    for node in nodes:
        points = [
            (m.link_quality.get(node, 1.0), m.weights[node])
            for m in status.history
            if node in m.weights
        ]
        axes.scatter([q for q, _ in points], [w for _, w in points], label=node, alpha=0.7)
    axes.set_xlabel("link quality")
    axes.set_ylabel("aggregation weight")
    axes.set_xlim(-0.05, 1.05)
    axes.set_title(f"{status.job_id}: weights against link quality ({status.spec.weighting})")
    if nodes:
        axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def plot_job(status: FlJobStatus, out: Path) -> list[Path]:
    """Both plots of ``status`` in directory ``out`` (created), named after the job."""
    out.mkdir(parents=True, exist_ok=True)
    return [
        plot_accuracy(status, out / f"{status.job_id}-accuracy.png"),
        plot_weights(status, out / f"{status.job_id}-weights.png"),
    ]
