"""The hub's JetStream consumers, listed and deleted through its API as an operator (or a hub
fault) would: how tests make a watch disappear and count what readers left behind."""

from __future__ import annotations

import json
from typing import Any

from meshmind.bus import Bus

CONSUMER_NOT_FOUND = 10014


async def _api(
    hub: Bus, subject: str, body: dict[str, Any] | None = None, *, absent_ok: bool = False
) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else b""
    reply = await hub.request_raw(f"$JS.API.{subject}", data, timeout=5)
    answer: dict[str, Any] = json.loads(reply.data)
    if "error" in answer and not (
        absent_ok and answer["error"].get("err_code") == CONSUMER_NOT_FOUND
    ):
        raise RuntimeError(f"{subject}: {answer['error']}")
    return answer


async def consumer_names(hub: Bus, stream: str) -> list[str]:
    """Every consumer of ``stream`` (``hub`` is a bus connected to the hub itself)."""
    answer = await _api(hub, f"CONSUMER.NAMES.{stream}")
    return sorted(answer.get("consumers") or [])


async def delete_consumers(hub: Bus, stream: str) -> int:
    """Delete every consumer of ``stream``, as a hub that lost them would; how many there were
    (one that went away meanwhile still counts)."""
    names = await consumer_names(hub, stream)
    for name in names:
        await _api(hub, f"CONSUMER.DELETE.{stream}.{name}", absent_ok=True)
    return len(names)


async def stream_config(hub: Bus, stream: str) -> dict[str, Any]:
    """The configuration of ``stream`` as the hub reports it (durations in nanoseconds)."""
    config: dict[str, Any] = (await _api(hub, f"STREAM.INFO.{stream}"))["config"]
    return config


async def create_stream(hub: Bus, config: dict[str, Any]) -> None:
    """Create a stream from a raw configuration (to set up a bucket another way)."""
    await _api(hub, f"STREAM.CREATE.{config['name']}", config)
