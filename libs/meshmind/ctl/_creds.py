"""``meshctl creds``: the mesh's CA, hub certificate, host nkeys and generated hub permissions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from meshmind.bus import check_node_id
from meshmind.security import (
    DEFAULT_HUB_NAMES,
    MeshCredentials,
    authorization_is_current,
    generate_credentials,
)


def parse_nodes(nodes: str) -> list[str]:
    """``n1,n2`` as node ids; :class:`ValueError` names the first bad one."""
    found = [n.strip() for n in nodes.split(",") if n.strip()]
    if not found:
        raise ValueError("--nodes names no host")
    return [check_node_id(n) for n in found]


def generate(out: Path, nodes: Sequence[str], hub_names: Sequence[str]) -> list[str]:
    """Write the credentials and return the lines to print: paths and public facts only."""
    creds = generate_credentials(out, nodes, hub_names=list(hub_names) or DEFAULT_HUB_NAMES)
    lines = [
        f"ca certificate     {creds.ca_cert}",
        f"ca key (secret)    {creds.ca_key}",
        f"hub certificate    {creds.hub_cert}",
        f"hub key (secret)   {creds.hub_key}",
        f"hub authorization  {creds.hub_authorization}",
    ]
    for node in creds.nodes():
        lines.append(f"{node + ' seed (secret)':<19}{creds.host_seed(node)}")
    return lines


def check(out: Path) -> tuple[bool, str]:
    """Whether the hub authorization under ``out`` matches today's contract, and why not."""
    creds = MeshCredentials(out)
    if not creds.hub_authorization.exists():
        return False, f"no hub authorization at {creds.hub_authorization}"
    if not authorization_is_current(creds.hub_authorization.read_text()):
        return False, f"{creds.hub_authorization} is stale: run `meshctl creds generate` again"
    return True, f"{creds.hub_authorization} is current"
