"""meshctl fl plot: a job's checkpoint drawn as PNG files, with no display."""

from __future__ import annotations

from pathlib import Path

from meshmind.bus.protocol import FlJobSpec, FlJobStatus, FlRoundMetrics
from meshmind.ctl._fl_plot import plot_job

PNG = b"\x89PNG\r\n\x1a\n"


def metrics(number: int, accuracy: float, coordinator: str) -> FlRoundMetrics:
    return FlRoundMetrics(
        job_id="j1",
        coordinator=coordinator,
        round=number,
        version=number,
        accuracy=accuracy,
        loss=0.5,
        participants=["n1", "n2"],
        weights={"n1": 0.7, "n2": 0.3},
        link_quality={"n1": 1.0, "n2": 0.4},
        examples={"n1": 100, "n2": 100},
        selected=["n1", "n2"],
        bytes_down=1000,
        bytes_up=1000,
        wall_s=1.0,
        at=1.0,
    )


def test_a_job_is_plotted_as_accuracy_per_round_and_weights_against_links(
    tmp_path: Path,
) -> None:
    status = FlJobStatus(
        job_id="j1",
        spec=FlJobSpec(job_id="j1", weighting="link"),
        state="done",
        coordinator="n2",
        version=3,
        adapter="jobs/j1/global/3",
        sha256="0" * 64,
        initial_accuracy=0.8,
        history=[metrics(1, 0.85, "n1"), metrics(2, 0.87, "n1"), metrics(3, 0.9, "n2")],
        takeovers=1,
        started_at=0.0,
        updated_at=1.0,
    )
    paths = plot_job(status, tmp_path / "plots")
    assert [p.name for p in paths] == ["j1-accuracy.png", "j1-weights.png"]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG)
        assert len(data) > 5000
