"""nats-server configuration files for the hub and the leaves of a local mesh."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

HUB_DOMAIN = "hub"


@dataclass(frozen=True)
class ServerPorts:
    """The ports one nats-server listens on (all on loopback)."""

    client: int
    monitor: int


def _q(value: str | Path) -> str:
    return json.dumps(str(value))


def hub_config(ports: ServerPorts, leafnode_port: int, store_dir: Path) -> str:
    """The hub: JetStream in domain ``hub`` and a leaf-node listener."""
    return f"""# meshmind lab hub (generated)
server_name: hub
ping_interval: "2s"
ping_max: 3
listen: "127.0.0.1:{ports.client}"
http: "127.0.0.1:{ports.monitor}"
jetstream {{
  domain: {HUB_DOMAIN}
  store_dir: {_q(store_dir)}
  max_memory_store: 256MB
  max_file_store: 4GB
}}
leafnodes {{
  listen: "127.0.0.1:{leafnode_port}"
}}
"""


def leaf_config(node: str, ports: ServerPorts, hub_leafnode_url: str, store_dir: Path) -> str:
    """One host's leaf: its own JetStream domain (the node id), one remote to the hub."""
    return f"""# meshmind lab leaf {node} (generated)
server_name: {_q(node)}
# A silent partition (no reset, no FIN) is noticed after ping_interval x ping_max.
ping_interval: "2s"
ping_max: 3
listen: "127.0.0.1:{ports.client}"
http: "127.0.0.1:{ports.monitor}"
jetstream {{
  domain: {_q(node)}
  store_dir: {_q(store_dir)}
  max_memory_store: 64MB
  max_file_store: 1GB
}}
leafnodes {{
  # Only through the link emulator: the hub also advertises its own leaf-node address,
  # and a leaf that reconnected there would bypass every impairment of its link.
  remotes: [ {{ url: {_q(hub_leafnode_url)}, ignore_discovered_servers: true }} ]
}}
"""
