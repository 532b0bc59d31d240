"""Per-host NATS identities: an nkey user seed (secret) and its public key."""

from __future__ import annotations

import os
from dataclasses import dataclass

import nkeys  # type: ignore[import-untyped]


@dataclass(frozen=True, repr=False)
class HostKey:
    """A host's nkey: ``public`` may be shown anywhere, ``seed`` never."""

    node: str
    public: str
    seed: bytes

    def __repr__(self) -> str:
        return f"HostKey(node={self.node!r}, public={self.public!r})"


def new_host_key(node: str) -> HostKey:
    """A fresh user nkey for ``node``."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return host_key_from_seed(node, seed)


def host_key_from_seed(node: str, seed: bytes) -> HostKey:
    """The key of ``node`` from its seed; :class:`ValueError` if it is not a user seed."""
    try:
        pair = nkeys.from_seed(bytearray(seed.strip()))
        public = pair.public_key.decode()
    except (nkeys.NkeysError, ValueError, TypeError):
        raise ValueError(f"the seed of host {node!r} is not a valid nkey seed") from None
    if not public.startswith("U"):
        raise ValueError(f"the seed of host {node!r} is not a user nkey")
    return HostKey(node, public, bytes(seed.strip()))
