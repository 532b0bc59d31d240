"""A coordinator keeps a job's lease renewed while it loads what the job needs."""

from __future__ import annotations

import asyncio

import pytest
from meshmind_fl_coordinator._lease import Lease, LeaseLost

from meshmind.bus import Bus
from meshmind.bus.protocol import LeaseAction


class CountedLease(Lease):
    """A lease whose store answers from a script: renewals succeed while ``renewable``."""

    def __init__(self, renewable: bool) -> None:
        super().__init__(Bus.__new__(Bus), "job", ttl_s=0.05)
        self.renewable = renewable
        self.asked: list[LeaseAction] = []

    async def ask(self, action: LeaseAction) -> bool:
        self.asked.append(action)
        return self.renewable


async def test_work_that_outlasts_the_lease_is_covered_by_renewals() -> None:
    lease = CountedLease(renewable=True)

    async def load() -> str:
        await asyncio.sleep(0.25)
        return "loaded"

    assert await lease.holding(load(), every_s=0.02) == "loaded"
    assert lease.asked.count("renew") >= 5


async def test_a_refused_renewal_stops_the_work_and_says_the_lease_is_lost() -> None:
    lease = CountedLease(renewable=False)
    stopped = asyncio.Event()

    async def load() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            stopped.set()
            raise

    with pytest.raises(LeaseLost):
        await lease.holding(load(), every_s=0.02)
    assert lease.asked == ["renew"]
    await asyncio.wait_for(stopped.wait(), 1)


async def test_quick_work_asks_nothing_of_the_store() -> None:
    lease = CountedLease(renewable=True)

    async def load() -> int:
        return 7

    assert await lease.holding(load(), every_s=1.0) == 7
    assert lease.asked == []
