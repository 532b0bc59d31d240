"""How meshctl reaches the mesh: the running lab, or any NATS server given by URL."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from meshmind import __version__
from meshmind.bus import (
    Bus,
    BusError,
    BusSettings,
    RawMessage,
    configure_logging,
    configure_tracing,
    flush_tracing,
    installed_provider,
    traced,
)
from meshmind.lab import LabState, read_state

T = TypeVar("T")

TRACE_FLUSH_S = 2.0
"""How long meshctl waits at most, before it exits, for its spans to reach the collector."""


class CtlError(Exception):
    """A failure meshctl reports in one line and exits 1 for."""


def lab_state(run_dir: Path) -> LabState:
    """The running lab in ``run_dir``, or a :class:`CtlError` saying how to start one."""
    state = read_state(run_dir)
    if state is None:
        raise CtlError(f"no lab is running in {run_dir} (start one with `meshctl up`)")
    return state


def target_url(url: str | None, run_dir: Path) -> str:
    """``--url``, else ``NATS_URL``, else the running lab's hub."""
    if url:
        return url
    if os.environ.get("NATS_URL"):
        return os.environ["NATS_URL"]
    return lab_state(run_dir).hub_url


def command_name() -> str:
    """The meshctl command running, as its span is named: ``meshctl link set``."""
    names: list[str] = []
    context = click.get_current_context(silent=True)
    while context is not None and context.parent is not None:
        names.append(context.info_name or "")
        context = context.parent
    if not names:  # a typer that runs its own copy of click: the words the command began with
        names = list(reversed(list(itertools.takewhile(_is_word, sys.argv[1:3]))))
    return " ".join(["meshctl", *reversed(names)])


def _is_word(arg: str) -> bool:
    return not arg.startswith("-")


def with_bus(
    url: str, work: Callable[[Bus], Awaitable[T]], *, timeout: float = 5.0, node: str | None = None
) -> T:
    """Connect to ``url``, run ``work``, close; connection failures become a :class:`CtlError`.

    It connects as ``node``, else as this host (``NODE_ID``), else as ``meshctl``: on a host's
    own leaf only that host's reply inbox is permitted.

    The whole of it is one span named after the command, the root of every message ``work``
    sends; it is exported as the ``OTEL_*`` variables say, within :data:`TRACE_FLUSH_S`.
    """
    identity = node or os.environ.get("NODE_ID") or "meshctl"
    settings = BusSettings(node_id=identity, nats_url=url, log_level="error", log_format="console")

    @traced(command_name())
    async def connected() -> T:
        try:
            bus = await Bus.connect(settings, name="meshctl", connect_timeout_s=timeout)
        except BusError as error:
            raise CtlError(str(error)) from None
        try:
            return await work(bus)
        finally:
            await bus.close()

    async def run() -> T:
        configure_logging(settings, "meshctl")
        configure_tracing(settings, "meshctl", version=__version__)
        try:
            return await connected()
        finally:
            provider = installed_provider()
            if provider is not None:
                await flush_tracing(provider, TRACE_FLUSH_S, shut_down=False)

    return asyncio.run(run())


async def services_in_mesh(bus: Bus, wait: float = 0.5) -> list[dict[str, Any]]:
    """Every service instance answering ``$SRV.PING``, with its ``$SRV.INFO`` and stats."""
    pings, infos, stats = await asyncio.gather(
        bus.gather_raw("$SRV.PING", wait=wait),
        bus.gather_raw("$SRV.INFO", wait=wait),
        bus.gather_raw("$SRV.STATS", wait=wait),
    )
    info_by_id = {i["id"]: i for i in _documents(infos)}
    stats_by_id = {s["id"]: s for s in _documents(stats)}
    found = []
    for ping in _documents(pings):
        info = info_by_id.get(ping["id"], {})
        stat = stats_by_id.get(ping["id"], {})
        endpoints = stat.get("endpoints") or []
        found.append(
            {
                "name": ping["name"],
                "id": ping["id"],
                "version": ping["version"],
                "node": (ping.get("metadata") or {}).get("node", ""),
                "endpoints": [e["subject"] for e in info.get("endpoints") or []],
                "requests": sum(e.get("num_requests", 0) for e in endpoints),
                "errors": sum(e.get("num_errors", 0) for e in endpoints),
                "started": stat.get("started", ""),
            }
        )
    return sorted(found, key=lambda s: (s["node"], s["name"], s["id"]))


def _documents(replies: list[RawMessage]) -> list[dict[str, Any]]:
    """The JSON objects with an ``id`` among Services API replies; anything else is skipped."""
    found = []
    for reply in replies:
        try:
            document = json.loads(reply.data)
        except ValueError:
            continue
        if isinstance(document, dict) and isinstance(document.get("id"), str):
            found.append(document)
    return found
