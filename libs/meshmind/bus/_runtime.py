"""Running a service process: logging, tracing, connect, serve, and drain on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from meshmind.bus._bus import Bus
from meshmind.bus._logging import configure_logging, get_logger
from meshmind.bus._service import ServiceKit
from meshmind.bus._settings import BusSettings
from meshmind.bus._tracing import configure_tracing

Setup = Callable[[Bus, ServiceKit], Awaitable[Callable[[], Awaitable[None]] | None]]
"""Declares a service's endpoints and subscriptions; may return a cleanup coroutine."""

_log = get_logger(__name__)


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
    cleanup, drain the connection (flushing what was published), flush the spans.
    """
    settings = settings or BusSettings()
    configure_logging(settings, name)
    provider = configure_tracing(settings, name)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    bus = await Bus.connect(settings, name=name)
    kit = bus.service(name, version, description)
    cleanup = await setup(bus, kit)
    await kit.start()
    _log.info("service.started", instance=kit.id, nats=settings.nats_url)
    try:
        await stop.wait()
    finally:
        _log.info("service.stopping")
        await _shutdown(bus, kit, cleanup, settings.drain_timeout_s)
        if provider is not None:
            provider.force_flush()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        _log.info("service.stopped")


async def _shutdown(
    bus: Bus, kit: ServiceKit, cleanup: Callable[[], Awaitable[None]] | None, budget_s: float
) -> None:
    """Each step on its own, within ``budget_s``: a failing step is logged, the rest still run,
    and the connection is closed at the end whatever happened."""
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
        _log.warning("service.shutdown_timed_out", budget_s=budget_s)
    await bus.close()


def background(work: Awaitable[None], name: str) -> asyncio.Task[None]:
    """Run ``work`` as a task whose failure is logged instead of vanishing with the task."""

    async def guarded() -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("task.failed", task=name)

    return asyncio.create_task(guarded(), name=name)


def run(name: str, version: str, setup: Setup, *, description: str = "") -> None:
    """The ``main`` of a service process."""
    asyncio.run(serve(name, version, setup, description=description))
