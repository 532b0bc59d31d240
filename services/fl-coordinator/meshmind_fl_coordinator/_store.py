"""A job's objects in the hub: global adapters, trainers' updates, checkpoints (as bytes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from meshmind.bus import HubUnavailable, ObjectStore, decode, encode
from meshmind.bus.protocol import FlJobStatus
from meshmind.federation import checkpoint_object, global_object, job_of_checkpoint

MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024
STORE_TIMEOUT_S = 30.0
"""One object store operation may take this long; then the hub counts as unavailable."""


@asynccontextmanager
async def bounded(what: str) -> AsyncIterator[None]:
    """Bound a hub operation in time: a hub that never answers must not stall a job."""
    try:
        async with asyncio.timeout(STORE_TIMEOUT_S):
            yield
    except TimeoutError:
        raise HubUnavailable(f"{what}: no answer in {STORE_TIMEOUT_S:g}s") from None


class JobStore:
    """The ``mesh-fl`` object store, seen as jobs."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    async def put_global(self, job_id: str, version: int, data: bytes) -> str:
        """Store global adapter ``version`` (safetensors bytes); its object name."""
        name = global_object(job_id, version)
        async with bounded(f"put {name}"):
            await self.store.put(name, data)
        return name

    async def get(self, name: str) -> bytes:
        """An object's bytes; :class:`KeyError` when absent."""
        async with bounded(f"get {name}"):
            return await self.store.get(name)

    async def save(self, status: FlJobStatus) -> None:
        """Write the job's checkpoint."""
        async with bounded(f"checkpoint {status.job_id}"):
            await self.store.put(checkpoint_object(status.job_id), encode(status))

    async def load(self, job_id: str) -> FlJobStatus | None:
        """The job's checkpoint, if it has one."""
        try:
            data = await self.get(checkpoint_object(job_id))
        except KeyError:
            return None
        return decode(data, FlJobStatus, max_size=MAX_CHECKPOINT_BYTES)

    async def job_ids(self) -> list[str]:
        """Every job with a checkpoint."""
        async with bounded("list jobs"):
            names = [info.name for info in await self.store.list()]
        return [job for job in map(job_of_checkpoint, names) if job is not None]
