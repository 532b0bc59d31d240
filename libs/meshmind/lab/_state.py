"""The lab's state file: where a running lab is, so that later commands can find it."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from pydantic import BaseModel

STATE_FILE = "lab.json"
RUN_MARKER = "MESHMIND_LAB_RUN"
"""Set in the environment of every process a lab starts, to its run directory."""


class LabState(BaseModel):
    """What ``meshctl up`` leaves behind for ``status``, ``link``, ``node`` and ``down``."""

    pid: int
    hub_url: str
    nodes: list[str]
    run_dir: str


def default_run_dir() -> Path:
    """``MESHMIND_LAB_DIR``, else ``.meshmind/lab`` under the current directory."""
    return Path(os.environ.get("MESHMIND_LAB_DIR", ".meshmind/lab")).resolve()


def write_state(run_dir: Path, state: LabState) -> None:
    """Record a running lab (atomically)."""
    path = run_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    tmp.replace(path)


def read_state(run_dir: Path) -> LabState | None:
    """The running lab recorded in ``run_dir``, or None when none is (or its process is gone)."""
    path = run_dir / STATE_FILE
    if not path.exists():
        return None
    state = LabState.model_validate_json(path.read_text())
    return state if pid_alive(state.pid) and is_lab_process(state.pid) else None


def is_lab_process(pid: int, proc: Path = Path("/proc")) -> bool:
    """Whether ``pid`` is a lab process (and not another one that reused a stale pid)."""
    try:
        cmdline = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"meshmind.lab" in cmdline


def clear_state(run_dir: Path) -> None:
    """Forget the lab recorded in ``run_dir``."""
    (run_dir / STATE_FILE).unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (and is not a zombie we could reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return waited == 0


def reap_orphans(run_dir: Path, proc: Path = Path("/proc")) -> list[int]:
    """SIGKILL every process still marked as started by a lab in ``run_dir``; their pids.

    A lab's children die with it (PR_SET_PDEATHSIG) and on its orderly shutdown; this is the
    net under both, for a lab that died in a way neither covered.
    """
    marker = f"{RUN_MARKER}={run_dir.resolve()}".encode()
    reaped = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                reaped.append(int(entry.name))
    return reaped
