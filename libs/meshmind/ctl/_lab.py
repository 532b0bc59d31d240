"""The local lab as meshctl drives it: start its process, call its control service, stop it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

from meshmind.bus import Bus, BusError, Empty, EndpointSpec, Message
from meshmind.bus.protocol import LAB_SHUTDOWN, LAB_STATUS, LabStatus
from meshmind.ctl._mesh_client import CtlError, lab_state, with_bus
from meshmind.ctl._render import error_console
from meshmind.lab import is_lab_process, pid_alive, read_state, reap_orphans

MARKER = ".meshmind-lab"
"""Marks a run directory as the lab's own, so that ``up`` may clear what an old lab left."""

Stopped = Literal["not-running", "stopped", "killed"]


def lab_call(
    run_dir: Path, spec: EndpointSpec[Any, Any], message: Message, timeout: float = 30.0
) -> Any:
    """Call an endpoint of the lab running in ``run_dir``; failures become a :class:`CtlError`."""
    state = lab_state(run_dir)

    async def call(bus: Bus) -> Any:
        return await bus.request(spec, message, timeout=timeout)

    try:
        return with_bus(state.hub_url, call)
    except BusError as error:
        raise CtlError(str(error)) from None


def start_lab(run_dir: Path, nodes: int, *, services: bool, timeout: float) -> LabStatus:
    """Start a lab process with ``nodes`` hosts in ``run_dir``; its status once it serves."""
    if read_state(run_dir) is not None:
        raise CtlError(f"a lab is already running in {run_dir} (`meshctl down` first)")
    reap(run_dir)
    if run_dir.exists() and (run_dir / MARKER).exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / MARKER).touch()
    argv = [sys.executable, "-m", "meshmind.lab", "--nodes", str(nodes), "--run-dir", str(run_dir)]
    if not services:
        argv.append("--no-services")
    log_path = run_dir / "lab.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    status: LabStatus | None = None
    while status is None:
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise CtlError("the lab did not start:\n" + "\n".join(tail))
        time.sleep(0.1)
        status = lab_status_once(run_dir)
    return status


def lab_status_once(run_dir: Path) -> LabStatus | None:
    """The lab's status if it is up and serving, else None."""
    state = read_state(run_dir)
    if state is None:
        return None

    async def ask(bus: Bus) -> LabStatus | None:
        try:
            return await bus.request(LAB_STATUS, Empty(), timeout=5)
        except BusError:
            return None

    try:
        return with_bus(state.hub_url, ask)
    except CtlError:
        return None


def stop_lab(run_dir: Path, timeout: float) -> Stopped:
    """Ask the lab in ``run_dir`` to shut down; kill it if it has not within ``timeout``."""
    state = read_state(run_dir)
    if state is None:
        reap(run_dir)
        return "not-running"
    with contextlib.suppress(CtlError):
        lab_call(run_dir, LAB_SHUTDOWN, Empty(), timeout=5.0)
    deadline = time.monotonic() + timeout
    while pid_alive(state.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    outcome: Stopped = "stopped"
    if pid_alive(state.pid) and is_lab_process(state.pid):
        os.kill(state.pid, signal.SIGKILL)
        outcome = "killed"
    reap(run_dir)
    return outcome


def reap(run_dir: Path) -> None:
    """Kill what an earlier lab in ``run_dir`` left running, and say so."""
    reaped = reap_orphans(run_dir)
    if reaped:
        error_console.print(
            f"[yellow]killed {len(reaped)} process(es) left by an earlier lab "
            f"in {run_dir}: {reaped}[/yellow]"
        )
