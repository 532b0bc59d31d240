"""The mesh's credentials on disk: CA, hub certificate and authorization, one seed per host."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from meshmind.bus import Contract, check_node_id
from meshmind.bus.protocol import CONTRACT
from meshmind.security._nkeys import HostKey, host_key_from_seed, new_host_key
from meshmind.security._permissions import hub_authorization, leaf_authorization
from meshmind.security._tls import DEFAULT_HUB_NAMES, KeyAndCert, issue_server_cert, new_ca

_SEED_LINE = "nkey: "


@dataclass(frozen=True)
class MeshCredentials:
    """Where the credentials of a mesh are; ``secret`` lists the files to keep private."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        """The CA certificate: every leaf trusts the hub through it."""
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        """The CA's private key: needed only to issue certificates; keep it offline."""
        return self.root / "ca-key.pem"

    @property
    def hub_cert(self) -> Path:
        """The hub's leaf-node server certificate."""
        return self.root / "hub" / "server-cert.pem"

    @property
    def hub_key(self) -> Path:
        """The hub's server key."""
        return self.root / "hub" / "server-key.pem"

    @property
    def hub_authorization(self) -> Path:
        """The hub's authorization include: hosts' public keys and permissions."""
        return self.root / "hub" / "authorization.conf"

    def host_seed(self, node: str) -> Path:
        """The include file with host ``node``'s nkey seed, for its leaf's remote."""
        return self.root / "hosts" / check_node_id(node) / "seed.conf"

    def host_authorization(self, node: str) -> Path:
        """Host ``node``'s leaf authorization include: its services' permissions."""
        return self.root / "hosts" / check_node_id(node) / "authorization.conf"

    def host_public_key(self, node: str) -> Path:
        """Host ``node``'s public key."""
        return self.root / "hosts" / check_node_id(node) / "nkey.pub"

    def host_key(self, node: str) -> HostKey:
        """Host ``node``'s key, read from its seed file."""
        line = self.host_seed(node).read_text().strip()
        if not line.startswith(_SEED_LINE):
            raise ValueError(f"{self.host_seed(node)} is not a seed file written by meshctl")
        return host_key_from_seed(node, json.loads(line[len(_SEED_LINE) :]).encode())

    def nodes(self) -> list[str]:
        """The hosts that have credentials here."""
        hosts = self.root / "hosts"
        return sorted(p.parent.name for p in hosts.glob("*/seed.conf")) if hosts.exists() else []

    def secret(self, nodes: Sequence[str]) -> list[Path]:
        """The files that must stay private."""
        return [self.ca_key, self.hub_key, *(self.host_seed(n) for n in nodes)]


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)


def generate_credentials(
    root: Path,
    nodes: Sequence[str],
    *,
    hub_names: Sequence[str] = DEFAULT_HUB_NAMES,
    contract: Contract = CONTRACT,
    hub_domain: str = "hub",
) -> MeshCredentials:
    """Write (or complete) the credentials of a mesh of ``nodes`` under ``root``.

    What exists is kept: the CA and hosts' seeds, so that adding a host leaves the others'
    credentials alone. The hub's certificate is issued again for ``hub_names`` and its
    authorization, and every host's leaf authorization, regenerated for every host with
    credentials here.
    """
    for node in nodes:
        check_node_id(node)
    creds = MeshCredentials(root)
    if creds.ca_cert.exists() and creds.ca_key.exists():
        ca = KeyAndCert(creds.ca_cert.read_bytes(), creds.ca_key.read_bytes())
    else:
        ca = new_ca()
        _write(creds.ca_key, ca.key_pem, secret=True)
        _write(creds.ca_cert, ca.cert_pem, secret=False)
    server = issue_server_cert(ca, hub_names)
    _write(creds.hub_key, server.key_pem, secret=True)
    _write(creds.hub_cert, server.cert_pem, secret=False)
    for node in nodes:
        if creds.host_seed(node).exists():
            continue
        key = new_host_key(node)
        _write(
            creds.host_seed(node),
            f"{_SEED_LINE}{json.dumps(key.seed.decode())}\n".encode(),
            secret=True,
        )
        _write(creds.host_public_key(node), f"{key.public}\n".encode(), secret=False)
    for node in creds.nodes():
        local = leaf_authorization(node, contract, hub_domain=hub_domain)
        _write(creds.host_authorization(node), local.encode(), secret=False)
    public = {node: creds.host_key(node).public for node in creds.nodes()}
    text = hub_authorization(public, contract, hub_domain=hub_domain)
    _write(creds.hub_authorization, text.encode(), secret=False)
    return creds
