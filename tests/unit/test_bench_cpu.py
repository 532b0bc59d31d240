"""The benchmark's CPU accounting counts the processes a run starts, not only its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench._cpu import SELF, by_program, cpu_used_since, tree_cpu_by_program


def tree_cpu_s(root: int | None = None) -> float:
    return sum(tree_cpu_by_program(root).values())


BURN = """
import sys, time
total = sum(i * i for i in range(3_000_000))
print(time.process_time(), flush=True)
sys.stdin.read()
"""


def test_a_childs_cpu_time_is_counted() -> None:
    before = tree_cpu_s()
    child = subprocess.Popen(
        [sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        burnt = float(child.stdout.readline())
        used = tree_cpu_s() - before
    finally:
        child.communicate("")
    assert used >= burnt - 0.05  # /proc counts in clock ticks of 10 ms


def test_an_unknown_process_has_used_nothing() -> None:
    assert tree_cpu_s(root=2**22 + 1) == 0.0


def test_a_module_run_with_dash_m_is_counted_under_its_name(tmp_path: Path) -> None:
    (tmp_path / "burner.py").write_text(BURN)
    before = tree_cpu_by_program()
    child = subprocess.Popen(
        [sys.executable, "-m", "burner"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    try:
        assert child.stdout is not None
        burnt = float(child.stdout.readline())
        per_write = cpu_used_since(before, writes=10)
    finally:
        child.communicate("")
    assert per_write["burner"] * 10 / 1e3 >= burnt - 0.05
    assert next(iter(per_write)) == "burner"  # the largest share comes first
    assert SELF in per_write


def test_figures_by_program_read_largest_first_and_name_the_measuring_process() -> None:
    used = {"nats-server": 0.08, SELF: 0.15, "meshmind_consensus": 0.283, "idle": 0.0001}
    assert by_program(used, own="the benchmark") == (
        "meshmind_consensus 0.283, the benchmark 0.150, nats-server 0.080"
    )
    assert by_program({"x": 12.34}, own="", digits=1) == "x 12.3"
