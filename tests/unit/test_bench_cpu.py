"""The benchmark's CPU accounting counts the processes a run starts, not only its own."""

from __future__ import annotations

import subprocess
import sys

from bench._cpu import tree_cpu_s

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
