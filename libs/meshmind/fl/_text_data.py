"""Labelled text from a host's data directory: ``*.jsonl`` and ``*.csv`` with text and label."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TextExample:
    """One sentence and its class name."""

    text: str
    label: str


def read_text_examples(directory: Path) -> list[TextExample]:
    """Every example in the directory's ``*.jsonl`` and ``*.csv`` files, files in name order.

    A JSON line or CSV row needs the fields ``text`` and ``label``; anything else is an error
    naming the file and line.
    """
    if not directory.is_dir():
        raise FileNotFoundError(f"no data directory {directory}")
    examples: list[TextExample] = []
    for path in sorted(directory.iterdir()):
        if path.suffix == ".jsonl":
            examples.extend(_read_jsonl(path))
        elif path.suffix == ".csv":
            examples.extend(_read_csv(path))
    if not examples:
        raise ValueError(f"no labelled examples (*.jsonl, *.csv) in {directory}")
    return examples


def _example(record: object, where: str) -> TextExample:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected an object with text and label")
    text, label = record.get("text"), record.get("label")
    if not isinstance(text, str) or not isinstance(label, str) or not text.strip():
        raise ValueError(f"{where}: needs a non-empty string 'text' and a string 'label'")
    return TextExample(text=text, label=label)


def _read_jsonl(path: Path) -> list[TextExample]:
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            where = f"{path.name}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: {error.msg}") from error
            examples.append(_example(record, where))
    return examples


def _read_csv(path: Path) -> list[TextExample]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [
            _example(row, f"{path.name}:{number}")
            for number, row in enumerate(csv.DictReader(handle), start=2)
        ]


def is_held_out(example: TextExample, share_percent: int = 20) -> bool:
    """Whether an example belongs to the evaluation split, decided by a hash of its text.

    Stable across hosts, runs and file orders, so the same sentence is never in both splits.
    """
    digest = hashlib.sha256(example.text.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 100 < share_percent
