"""The lab and the hub observer of a module's ``observed`` fixture, as two fixtures."""

from __future__ import annotations

import pytest

from meshmind.bus import Bus
from meshmind.lab import LocalMesh


@pytest.fixture
def lab(observed: tuple[LocalMesh, Bus]) -> LocalMesh:
    return observed[0]


@pytest.fixture
def hub(observed: tuple[LocalMesh, Bus]) -> Bus:
    return observed[1]
