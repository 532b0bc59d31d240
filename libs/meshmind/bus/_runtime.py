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
        await kit.stop()
        if cleanup is not None:
            await cleanup()
        await bus.drain()
        if provider is not None:
            provider.force_flush()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        _log.info("service.stopped")


def run(name: str, version: str, setup: Setup, *, description: str = "") -> None:
    """The ``main`` of a service process."""
    asyncio.run(serve(name, version, setup, description=description))
