"""Fixtures that start real NATS servers: a hub and leaves, as the lab runs them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from meshmind.bus import Bus, BusSettings, configure_tracing
from meshmind.lab import LocalMesh, node_names
from tests.kit.lab_contract import LAB_CONTRACT

Connect = Callable[..., Awaitable[Bus]]

_SPANS = InMemorySpanExporter()


@pytest.fixture(scope="session", autouse=True)
def _tracer_provider() -> None:
    configure_tracing(BusSettings(node_id="tests"), "tests", exporter=_SPANS)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """The spans this test process finished (cleared before each test)."""
    _SPANS.clear()
    return _SPANS


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[LocalMesh]:
    """A hub and three leaves n1, n2, n3, each behind its own link emulator."""
    async with LocalMesh(tmp_path / "lab", node_names(3), contract=LAB_CONTRACT) as running:
        yield running


@pytest.fixture
async def connect(mesh: LocalMesh) -> AsyncIterator[Connect]:
    """``await connect("n1")``: a bus on host n1's leaf, closed after the test."""
    opened: list[Bus] = []

    async def open_bus(node: str, name: str = "test", **settings: object) -> Bus:
        bus = await Bus.connect(
            BusSettings(node_id=node, nats_url=mesh.host(node).url, **settings),  # type: ignore[arg-type]
            name=name,
        )
        opened.append(bus)
        return bus

    yield open_bus
    for bus in opened:
        await bus.close()
