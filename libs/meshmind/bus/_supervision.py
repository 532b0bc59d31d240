"""Supervised background tasks: a failed run is logged, counted and run again after a backoff."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from meshmind.bus._logging import get_logger

_log = get_logger(__name__)


@dataclass
class RestartBackoff:
    """How long a failed background task waits before it runs again: ``first_s``, doubling
    after every failure up to ``cap_s``, and back to ``first_s`` once a run has lasted
    ``healthy_after_s`` before failing."""

    first_s: float = 0.1
    cap_s: float = 5.0
    healthy_after_s: float = 60.0

    def __post_init__(self) -> None:
        self._next_s = self.first_s

    def after_failure(self, ran_for_s: float) -> float:
        """The wait before the next run, after a run that failed ``ran_for_s`` after starting."""
        if ran_for_s >= self.healthy_after_s:
            self._next_s = self.first_s
        delay = self._next_s
        self._next_s = min(self.cap_s, self._next_s * 2)
        return delay


_RESTARTS: Counter[str] = Counter()


def task_restarts() -> dict[str, int]:
    """How many times each background task of this process failed and was started again."""
    return dict(_RESTARTS)


def background(work: Callable[[], Awaitable[None]], name: str) -> asyncio.Task[None]:
    """Run ``work()`` as a supervised task: a service never runs on with a dead loop.

    When a run fails, the failure is logged with its traceback, counted (:func:`task_restarts`)
    and ``work()`` is started afresh after a :class:`RestartBackoff` wait. A run that returns
    ends the task; cancelling the task stops it for good.
    """

    async def supervised() -> None:
        loop = asyncio.get_running_loop()
        backoff = RestartBackoff()
        while True:
            started = loop.time()
            try:
                await work()
                return
            except Exception:
                _RESTARTS[name] += 1
                delay = backoff.after_failure(loop.time() - started)
                _log.exception(
                    "task.failed", task=name, restarts=_RESTARTS[name], restart_in_s=delay
                )
            await asyncio.sleep(delay)

    return asyncio.create_task(supervised(), name=name)
