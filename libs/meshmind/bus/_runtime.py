"""Running a service process: logging, tracing, connect, serve, and drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

from meshmind.bus._bus import Bus
from meshmind.bus._logging import configure_logging, get_logger
from meshmind.bus._service import ServiceKit
from meshmind.bus._settings import BusSettings
from meshmind.bus._tracing import configure_tracing, flush_tracing

Setup = Callable[[Bus, ServiceKit], Awaitable[Callable[[], Awaitable[None]] | None]]
"""Declares a service's endpoints and subscriptions; may return a cleanup coroutine."""

_log = get_logger(__name__)

SPAN_FLUSH_FLOOR_S = 0.5
"""Time the spans get at the end of shutdown even when draining used the whole budget."""


async def serve(
    name: str,
    version: str,
    setup: Setup,
    *,
    settings: BusSettings | None = None,
    description: str = "",
    stop: asyncio.Event | None = None,
) -> None:
    """Run service ``name`` until SIGTERM or SIGINT (or ``stop`` is set), then shut down cleanly.

    Shutdown order: stop taking requests, let in-flight handlers finish, run the service's
    cleanup, drain the connection (flushing what was published), flush the spans. All of it
    takes ``DRAIN_TIMEOUT_S`` at most, whatever the collector does, plus
    :data:`SPAN_FLUSH_FLOOR_S` for the spans when the drain used the whole budget.
    """
    settings = settings or BusSettings()
    configure_logging(settings, name)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    bus = await Bus.connect(settings, name=name)
    kit = ServiceKit(bus, name, version, description)
    provider = configure_tracing(settings, name, version=version, instance_id=kit.id)
    cleanup = await setup(bus, kit)
    await kit.start()
    _log.info("service.started", instance=kit.id, nats=settings.nats_url)
    try:
        await stop.wait()
    finally:
        _log.info("service.stopping")
        deadline = loop.time() + settings.drain_timeout_s
        await _shutdown(bus, kit, cleanup, settings.drain_timeout_s)
        if provider is not None:
            budget_s = max(SPAN_FLUSH_FLOOR_S, deadline - loop.time())
            await flush_tracing(provider, budget_s, shut_down=True)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        _log.info("service.stopped")


async def _shutdown(
    bus: Bus, kit: ServiceKit, cleanup: Callable[[], Awaitable[None]] | None, budget_s: float
) -> None:
    """Each step on its own, within ``budget_s``: a failing step is logged, the rest still run,
    and the connection is closed at the end whatever happened."""
    step = "stop"
    try:
        async with asyncio.timeout(budget_s):
            for step, action in (("stop", kit.stop), ("cleanup", cleanup), ("drain", bus.drain)):
                if action is None:
                    continue
                try:
                    await action()
                except Exception:
                    _log.exception("service.shutdown_step_failed", step=step)
    except TimeoutError:
        _log.warning("service.shutdown_timed_out", budget_s=budget_s, step=step)
    await bus.close()


def run(name: str, version: str, setup: Setup, *, description: str = "") -> None:
    """The ``main`` of a service process.

    After a clean shutdown the process ends at once, without the interpreter's teardown: with
    torch loaded that takes seconds, and drained, flushed and logged there is nothing left for
    it to do. A failure still ends the usual way, with its traceback.
    """
    asyncio.run(serve(name, version, setup, description=description))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
