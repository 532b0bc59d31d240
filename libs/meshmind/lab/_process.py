"""Supervised child processes: logs in the run directory, no orphans when the parent dies."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from meshmind.bus import get_logger

_log = get_logger(__name__)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ManagedProcess:
    """A child process whose output goes to ``log_path`` and which dies with its parent."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        """The pid while it runs."""
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self._process is not None and self._process.returncode is None

    @property
    def returncode(self) -> int | None:
        """The exit status once it has exited."""
        return self._process.returncode if self._process else None

    async def start(self) -> None:
        """Start (or start again); output is appended to the log file."""
        if self.running:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env} if self.env is not None else None
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,
            )

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
        await self._signal_and_wait(signal.SIGTERM, timeout)
        if self.running:
            _log.warning("process.stop_timed_out", process=self.name, timeout_s=timeout)
            await self.kill()

    async def kill(self) -> None:
        """SIGKILL and reap."""
        await self._signal_and_wait(signal.SIGKILL, None)

    async def wait(self) -> int:
        """Wait for the exit status."""
        if self._process is None:
            raise RuntimeError(f"{self.name} was never started")
        return await self._process.wait()

    async def _signal_and_wait(self, signum: int, timeout: float | None) -> None:
        if not self.running or self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._process.send_signal(signum)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._process.wait(), timeout)
