"""Text data for the MiniLM task: the demo set made from templates, and reading a data dir."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from meshmind.fl import (
    DEMO_LABELS,
    TextExample,
    demo_examples,
    demo_share,
    is_held_out,
    read_text_examples,
    write_demo_data,
)
from meshmind.fl.demo_data import main


def test_the_demo_set_is_distinct_balanced_and_reproducible() -> None:
    examples = demo_examples(400, seed=3)
    assert len(examples) == len({e.text for e in examples}) == 400
    assert Counter(e.label for e in examples) == dict.fromkeys(DEMO_LABELS, 100)
    assert demo_examples(400, seed=3) == examples
    assert demo_examples(400, seed=4) != examples


def test_hosts_get_disjoint_skewed_shares_of_the_demo_set() -> None:
    shares = [demo_share(node, 4, seed=0) for node in range(4)]
    texts = [{e.text for e in share} for share in shares]
    assert sum(len(t) for t in texts) == len(set().union(*texts)) == 400
    mixes = [Counter(e.label for e in share) for share in shares]
    assert len({tuple(sorted(m.items())) for m in mixes}) == 4


def test_written_demo_data_reads_back(tmp_path: Path) -> None:
    write_demo_data(tmp_path, node_index=1, n_nodes=3, seed=2)
    assert read_text_examples(tmp_path) == demo_share(1, 3, seed=2)


def test_the_command_line_writes_a_hosts_share(tmp_path: Path) -> None:
    main([str(tmp_path / "data"), "--node-index", "0", "--nodes", "2", "--count", "80"])
    lines = (tmp_path / "data" / "demo.jsonl").read_text().splitlines()
    assert [json.loads(line)["text"] for line in lines] == [
        e.text for e in demo_share(0, 2, count=80)
    ]


def test_jsonl_and_csv_files_are_read_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "link down", "label": "connectivity"}\n\n')
    (tmp_path / "b.csv").write_text('label,text\npower,"battery low, again"\n')
    (tmp_path / "notes.txt").write_text("ignored")
    assert read_text_examples(tmp_path) == [
        TextExample("link down", "connectivity"),
        TextExample("battery low, again", "power"),
    ]


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("x.jsonl", '{"text": "ok", "label": "power"}\n{"text": 3}\n', "x.jsonl:2: needs"),
        ("x.jsonl", "not json\n", "x.jsonl:1: Expecting value"),
        ("x.jsonl", "[1, 2]\n", "x.jsonl:1: expected an object"),
        ("x.csv", "text,label\n,power\n", "x.csv:2: needs"),
    ],
)
def test_bad_files_name_the_line(tmp_path: Path, name: str, content: str, error: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=error):
        read_text_examples(tmp_path)


def test_an_empty_or_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no labelled examples"):
        read_text_examples(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_text_examples(tmp_path / "absent")


def test_the_held_out_split_depends_on_the_text_alone() -> None:
    examples = demo_examples(400)
    held = [e for e in examples if is_held_out(e)]
    assert 0.12 < len(held) / len(examples) < 0.28
    relabelled = [TextExample(e.text, "other") for e in held]
    assert all(is_held_out(e) for e in relabelled)
