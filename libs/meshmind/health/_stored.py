"""The ``mesh-links`` bucket: its TTL, and a full read that believes only consistent reports."""

from __future__ import annotations

import time

from meshmind.bus import Bus
from meshmind.bus.protocol import LINKS_BUCKET, LinkReport
from meshmind.health._claims import CheckedReports, check_reports

MISSED_REFRESHES = 3
"""A stored report outlives this many refreshes that did not arrive."""


def links_ttl_s(report_every_s: float, store_timeout_s: float) -> float:
    """The bucket's TTL: a report refreshed every ``report_every_s`` by puts that may take up
    to ``store_timeout_s`` expires only after ``MISSED_REFRESHES`` refreshes in a row failed."""
    if report_every_s <= 0 or store_timeout_s <= 0:
        raise ValueError("the report interval and the store timeout must be positive")
    return (MISSED_REFRESHES + 1) * report_every_s + store_timeout_s


async def read_links(bus: Bus, now: float | None = None) -> CheckedReports:
    """Every link report in the bucket, in one ordered read; reports whose claims disagree
    with their key or the clock are refused. Nothing when the bucket does not exist yet."""
    try:
        bucket = await bus.hub().key_value(LINKS_BUCKET, LinkReport, create=False)
    except KeyError:
        return CheckedReports()
    stored = await bucket.values()
    return check_reports(stored, time.time() if now is None else now)
