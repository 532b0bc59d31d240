"""Processes left by a lab that died are found by their marker and killed, others are not."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from meshmind.lab._state import RUN_MARKER, reap_orphans


def sleeper(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], env={**os.environ, **env})


def test_only_the_labs_own_leftovers_are_killed(tmp_path: Path) -> None:
    ours = sleeper({RUN_MARKER: str(tmp_path / "lab")})
    other_lab = sleeper({RUN_MARKER: str(tmp_path / "other")})
    unmarked = sleeper({})
    try:
        reaped = reap_orphans(tmp_path / "lab")

        assert reaped == [ours.pid]
        assert ours.wait(timeout=10) == -9
        assert other_lab.poll() is None
        assert unmarked.poll() is None
    finally:
        for process in (ours, other_lab, unmarked):
            process.kill()
            process.wait()
