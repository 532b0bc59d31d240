"""Recording typed events with their arrival times, to assert on what a mesh did and when."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from meshmind.bus import Bus, EventSpec, Message

M = TypeVar("M", bound=Message)


@dataclass
class Recorder(Generic[M]):
    """Every message of one event spec, with the monotonic time it arrived."""

    events: list[tuple[float, M]] = field(default_factory=list)

    @classmethod
    async def start(cls, bus: Bus, spec: EventSpec[M], **params: str) -> Recorder[M]:
        recorder: Recorder[M] = cls()

        async def on_event(message: M) -> None:
            recorder.events.append((time.monotonic(), message))

        await bus.subscribe(spec, on_event, **params)
        await bus.flush()
        return recorder

    def since(self, start: float) -> list[tuple[float, M]]:
        """Events that arrived at or after ``start``."""
        return [(at, m) for at, m in self.events if at >= start]
