"""An adapter's bytes: the copy a message carries when it matches its digest, else the store's."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable


async def carried_or_fetched(
    carried: bytes | None, sha256: str, name: str, fetch: Callable[[str], Awaitable[bytes]]
) -> bytes:
    """``carried`` if it is there and its SHA-256 is ``sha256``; else ``fetch(name)``. A copy
    that does not match its digest is never used: the store's is, checked by its reader."""
    if carried is not None and hashlib.sha256(carried).hexdigest() == sha256:
        return carried
    return await fetch(name)
