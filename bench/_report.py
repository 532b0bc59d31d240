"""Benchmark results in the team's format: bench/results/<area>.json, ratios against baselines."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
_TARGET = re.compile(r"^(ratio|value) (>=|<=|<|>) (-?[\d.]+)$")


@dataclass
class Metric:
    """One reported figure, with its baseline when it has one."""

    name: str
    value: float
    unit: str
    target: str | None = None
    baseline_name: str | None = None
    baseline: float | None = None
    note: str | None = None
    reached: bool = True
    """False when what is timed never happened: the value is then a bound, never a target met."""

    def as_json(self) -> dict[str, Any]:
        """The metric as the results file holds it; ``met`` is judged here."""
        out: dict[str, Any] = {"name": self.name, "value": round(self.value, 4), "unit": self.unit}
        ratio = None
        if self.baseline_name is not None and self.baseline is not None:
            ratio = self.value / self.baseline if self.baseline else float("inf")
            out |= {
                "baseline_name": self.baseline_name,
                "baseline": round(self.baseline, 4),
                "ratio": round(ratio, 4),
            }
        if self.target is not None:
            out["target"] = self.target
            out["met"] = self.reached and meets(self.target, self.value, ratio)
        if self.note:
            out["note"] = self.note
        return out


def meets(target: str, value: float, ratio: float | None) -> bool:
    """What ``target`` (``ratio >= 0.5``, ``value <= 100`` …) says of this run."""
    match = _TARGET.match(target)
    if match is None:
        raise ValueError(f"target {target!r} is not of the form 'ratio|value OP number'")
    subject = ratio if match.group(1) == "ratio" else value
    if subject is None:
        return False
    bound = float(match.group(3))
    return {
        ">=": subject >= bound,
        "<=": subject <= bound,
        "<": subject < bound,
        ">": subject > bound,
    }[match.group(2)]


@dataclass
class Report:
    """Everything one area measured."""

    area: str
    metrics: list[Metric] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    command: str | None = None
    """The command that produced it (default: ``make bench AREA=<area>``)."""

    def write(self) -> Path:
        """Write ``bench/results/<area>.json`` and return its path."""
        RESULTS.mkdir(parents=True, exist_ok=True)
        document: dict[str, Any] = {
            "area": self.area,
            "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": machine(),
            "command": self.command or f"make bench AREA={self.area}",
            "metrics": [m.as_json() for m in self.metrics],
        }
        if self.notes:
            document["notes"] = self.notes
        path = RESULTS / f"{self.area}.json"
        path.write_text(json.dumps(document, indent=2) + "\n")
        return path


def machine() -> dict[str, Any]:
    """CPUs, Python and nats-server versions of this run."""
    from meshmind.lab import nats_server_binary

    version = (
        subprocess.run(
            [nats_server_binary(), "--version"], capture_output=True, text=True, check=False
        )
        .stdout.strip()
        .removeprefix("nats-server: v")
    )
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "nats_server": version}


def median(samples: list[float]) -> float:
    """The median of repeated measurements."""
    return statistics.median(samples)


def percentile(samples: list[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank) of ``samples``."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered)) - 1))
    return ordered[rank]
