"""Waiting for what a mesh does eventually: interest crossing leaf links, state converging."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from meshmind.bus import Bus, EndpointSpec, Message, NoResponders

R = TypeVar("R", bound=Message)


async def request_when_served(
    bus: Bus,
    spec: EndpointSpec[Any, R],
    message: Message,
    *,
    within: float = 5.0,
    timeout: float = 5.0,
    **params: str,
) -> R:
    """Request, retrying while nobody serves the subject yet (subscription interest takes a
    moment to cross the leaf links), for at most ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            return await bus.request(spec, message, timeout=timeout, **params)
        except NoResponders:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.02)


async def eventually(
    check: Callable[[], object], *, within: float = 5.0, every: float = 0.05
) -> None:
    """Wait until ``check`` (sync or async) returns something truthy; AssertionError if it
    does not within ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: object = None
    while loop.time() < deadline:
        result = check()
        last = await result if inspect.isawaitable(result) else result
        if last:
            return
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {within:g}s (last result: {last!r})")
