"""Where a host's federated-learning data comes from: a directory, or its share of a set."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_TRAILING_NUMBER = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class HostData:
    """Where a host's data comes from: a directory (text tasks), or its share of a data set
    that ships with a package, by its index among ``nodes`` hosts."""

    node_index: int = 0
    nodes: int = 1
    data_dir: Path | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.node_index < self.nodes:
            raise ValueError(f"node index {self.node_index} is not in [0, {self.nodes})")


def host_data(
    node_id: str, *, node_index: int | None, nodes: int, data_dir: Path | None
) -> HostData:
    """The host's data: ``node_index`` if given, else the number at the end of its id minus
    one (``n3`` is host 2, as the lab names hosts), modulo ``nodes``; else host 0."""
    if node_index is None:
        match = _TRAILING_NUMBER.search(node_id)
        node_index = (int(match.group(1)) - 1) % nodes if match else 0
    return HostData(node_index=node_index, nodes=nodes, data_dir=data_dir)
