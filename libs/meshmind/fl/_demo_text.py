"""A small demo text data set made from templates: short mesh-operator notes in four classes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from meshmind.fl._partition import dirichlet_partition
from meshmind.fl._text_data import TextExample

_PLACES = ["kitchen", "rooftop", "garage", "library", "north tower", "cafe", "school", "barn"]
_DEVICES = ["router", "pi", "access point", "edge server", "antenna", "node"]

_TEMPLATES: dict[str, list[str]] = {
    "connectivity": [
        "the {device} in the {place} keeps losing its link",
        "packet loss to the {place} is very high tonight",
        "no route from the {place} {device} to the gateway",
        "ping to the {place} times out every few minutes",
        "the {place} link is slow and latency spikes",
        "neighbours cannot reach the {device} at the {place}",
    ],
    "power": [
        "the {place} {device} rebooted after a power cut",
        "battery on the {place} {device} is almost empty",
        "solar panel at the {place} gives too little charge",
        "the {device} at the {place} has no power since morning",
        "power supply of the {place} {device} is failing",
        "voltage drops at the {place} make the {device} restart",
    ],
    "hardware": [
        "the {device} in the {place} is overheating",
        "fan of the {place} {device} makes a loud noise",
        "the {place} {device} has a cracked case and water inside",
        "sd card of the {place} {device} is corrupted",
        "cable to the {place} {device} was chewed through",
        "the {place} {device} antenna connector is loose",
    ],
    "software": [
        "firmware update on the {place} {device} failed",
        "the {place} {device} runs an old kernel version",
        "configuration of the {place} {device} was reset",
        "a service on the {place} {device} crashes at start",
        "certificates on the {place} {device} have expired",
        "the {place} {device} logs fill the disk with errors",
    ],
}

DEMO_LABELS: tuple[str, ...] = tuple(_TEMPLATES)
_OPENERS = ["", "today ", "again ", "since yesterday ", "users report that ", "it seems "]


def demo_examples(count: int = 400, seed: int = 0) -> list[TextExample]:
    """``count`` distinct labelled sentences, classes balanced, the same for the same seed."""
    rng = random.Random(seed)
    per_class = -(-count // len(DEMO_LABELS))
    examples: list[TextExample] = []
    for label, templates in _TEMPLATES.items():
        sentences = sorted(
            {
                opener + template.format(place=place, device=device)
                for opener in _OPENERS
                for template in templates
                for place in _PLACES
                for device in _DEVICES
            }
        )
        if per_class > len(sentences):
            raise ValueError(f"at most {len(sentences) * len(DEMO_LABELS)} demo examples")
        examples.extend(TextExample(text, label) for text in rng.sample(sentences, per_class))
    rng.shuffle(examples)
    return examples[:count]


def demo_share(
    node_index: int, n_nodes: int, seed: int = 0, count: int = 400, alpha: float = 1.0
) -> list[TextExample]:
    """Host ``node_index``'s label-skewed share of the demo set among ``n_nodes`` hosts."""
    if not 0 <= node_index < n_nodes:
        raise ValueError(f"node_index {node_index} is not in [0, {n_nodes})")
    examples = demo_examples(count, seed)
    labels = np.array([DEMO_LABELS.index(e.label) for e in examples], dtype=np.int64)
    rows = dirichlet_partition(labels, n_nodes, alpha, seed, min_size=4)[node_index]
    return [examples[int(row)] for row in rows]


def write_demo_data(
    directory: Path, node_index: int = 0, n_nodes: int = 1, seed: int = 0, count: int = 400
) -> Path:
    """Write host ``node_index``'s share as ``directory/demo.jsonl``; returns the file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "demo.jsonl"
    lines = (
        json.dumps({"text": e.text, "label": e.label})
        for e in demo_share(node_index, n_nodes, seed, count)
    )
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path
