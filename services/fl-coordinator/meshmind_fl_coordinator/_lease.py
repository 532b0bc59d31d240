"""A job's coordinator lease in the consensus service, asked of this host's consensus."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from meshmind.bus import Bus, BusError
from meshmind.bus.protocol import CONSENSUS_LEASE, FL_LEASE_PREFIX, LeaseAction, LeaseRequest

REQUEST_TIMEOUT_S = 8.0
T = TypeVar("T")


class LeaseLost(Exception):
    """The lease was not renewed while this host prepared to act on it."""


def lease_key(job_id: str) -> str:
    """``fl/job/<id>/coordinator``."""
    return f"{FL_LEASE_PREFIX}{job_id}/coordinator"


class Lease:
    """Grant, renew and release one job's lease for this host."""

    def __init__(self, bus: Bus, job_id: str, ttl_s: float) -> None:
        self.bus = bus
        self.key = lease_key(job_id)
        self.ttl_s = ttl_s

    async def ask(self, action: LeaseAction) -> bool:
        """Whether this host holds the lease after ``action``; ``False`` when consensus cannot
        say now (no leader, unreachable): nobody may act on a lease it cannot confirm."""
        request = LeaseRequest(
            action=action, key=self.key, holder=self.bus.node_id, ttl_s=self.ttl_s
        )
        try:
            state = await self.bus.request(
                CONSENSUS_LEASE, request, timeout=REQUEST_TIMEOUT_S, node=self.bus.node_id
            )
        except BusError:
            return False
        return state.ok and state.holder == self.bus.node_id

    async def holding(self, work: Awaitable[T], every_s: float) -> T:
        """``work``'s result, renewing the lease every ``every_s`` while it runs (loading torch
        or a model can outlast a lease); raises :class:`LeaseLost` if a renewal fails."""
        running = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({running}, timeout=every_s)
                if done:
                    return running.result()
                if not await self.ask("renew"):
                    raise LeaseLost(self.key)
        finally:
            running.cancel()
