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


@dataclass(frozen=True)
class HubSecurity:
    """The hub's leaf-node TLS (certificate and key) and its generated authorization include
    (nats-server resolves an include relative to the including file's directory)."""

    cert_file: Path
    key_file: Path
    authorization: Path


@dataclass(frozen=True)
class LeafSecurity:
    """A leaf's credentials for the hub: its nkey seed include (relative to the leaf's config
    file) and the CA it trusts."""

    seed_include: Path
    ca_file: Path
    authorization: Path
    """The host's leaf authorization include (relative to the leaf's config file): its
    services get the permissions the hub gives the host."""


def _q(value: str | Path) -> str:
    return json.dumps(str(value))


def _hub_tls(security: HubSecurity | None) -> str:
    if security is None:
        return ""
    return f"""  # Leaves must speak TLS and sign with their host's nkey (see the authorization).
  tls {{
    cert_file: {_q(security.cert_file)}
    key_file: {_q(security.key_file)}
    timeout: 5
  }}
"""


def _leaf_remote_security(security: LeafSecurity | None) -> str:
    if security is None:
        return ""
    return (
        f"\n      include {_q(security.seed_include)}"
        f"\n      tls: {{ ca_file: {_q(security.ca_file)}, timeout: 5 }}"
    )


def hub_config(
    ports: ServerPorts, leafnode_port: int, store_dir: Path, security: HubSecurity | None = None
) -> str:
    """The hub: JetStream in domain ``hub`` and a leaf-node listener; with ``security``, leaves
    need TLS and their host's nkey, and each gets the permissions the contract gives it."""
    authorization = f"include {_q(security.authorization)}\n" if security else ""
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
{authorization}leafnodes {{
  listen: "127.0.0.1:{leafnode_port}"
{_hub_tls(security)}}}
"""


def leaf_config(
    node: str,
    ports: ServerPorts,
    hub_leafnode_url: str,
    store_dir: Path,
    security: LeafSecurity | None = None,
) -> str:
    """One host's leaf: its own JetStream domain (the node id), one remote to the hub (over
    TLS, signed with the host's nkey, with ``security``, which also holds the leaf's own
    clients to the host's permissions)."""
    authorization = f"include {_q(security.authorization)}\n" if security else ""
    return f"""# meshmind lab leaf {node} (generated)
server_name: {_q(node)}
# A silent partition (no reset, no FIN) is noticed once ping_max pings go unanswered:
# 3 to 5 ping intervals after it starts (6-10 s here).
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
{authorization}leafnodes {{
  # Only through the link emulator: the hub also advertises its own leaf-node address,
  # and a leaf that reconnected there would bypass every impairment of its link.
  remotes: [
    {{
      url: {_q(hub_leafnode_url)}
      ignore_discovered_servers: true{_leaf_remote_security(security)}
    }}
  ]
}}
"""
