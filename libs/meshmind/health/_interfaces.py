"""Interface state and traffic counters read over rtnetlink with pyroute2."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final

from pyroute2 import IPRoute, NetNS

IFF_UP: Final = 0x1
USABLE_OPER_STATES: Final = frozenset({"UP", "UNKNOWN"})
COUNTERS: Final = (
    "rx_bytes",
    "tx_bytes",
    "rx_packets",
    "tx_packets",
    "rx_errors",
    "tx_errors",
    "rx_dropped",
    "tx_dropped",
)


@dataclass(frozen=True)
class InterfaceSample:
    """One interface's state and cumulative counters, read at ``at`` (time.monotonic())."""

    name: str
    index: int
    oper_state: str
    admin_up: bool
    carrier: bool | None
    mtu: int
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    rx_errors: int
    tx_errors: int
    rx_dropped: int
    tx_dropped: int
    at: float

    @property
    def up(self) -> bool:
        """Administratively up (IFF_UP), operationally usable, and not without carrier.

        The RFC 2863 operational state "UNKNOWN" counts as usable: drivers that do not track
        it, such as loopback and tun/tap, report UNKNOWN for an interface that carries traffic.
        Carrier is checked as well because the kernel derives the operational state from a
        carrier change lazily (linkwatch, up to a second later), while carrier is immediate.
        """
        return self.admin_up and self.oper_state in USABLE_OPER_STATES and self.carrier is not False


def _required(link: Any, attr: str) -> Any:
    value = link.get_attr(attr)
    if value is None:
        raise ValueError(f"interface {link['index']}: the kernel sent no {attr}")
    return value


def _sample(link: Any, at: float) -> InterfaceSample:
    stats = link.get_attr("IFLA_STATS64")
    if stats is None:
        stats = _required(link, "IFLA_STATS")
    carrier = link.get_attr("IFLA_CARRIER")
    return InterfaceSample(
        name=str(_required(link, "IFLA_IFNAME")),
        index=int(link["index"]),
        oper_state=str(_required(link, "IFLA_OPERSTATE")),
        admin_up=bool(link["flags"] & IFF_UP),
        carrier=None if carrier is None else bool(carrier),
        mtu=int(_required(link, "IFLA_MTU")),
        rx_bytes=int(stats["rx_bytes"]),
        tx_bytes=int(stats["tx_bytes"]),
        rx_packets=int(stats["rx_packets"]),
        tx_packets=int(stats["tx_packets"]),
        rx_errors=int(stats["rx_errors"]),
        tx_errors=int(stats["tx_errors"]),
        rx_dropped=int(stats["rx_dropped"]),
        tx_dropped=int(stats["tx_dropped"]),
        at=at,
    )


class NetlinkInterfaces:
    """Reads interfaces over one rtnetlink socket, in ``netns`` or in this process's namespace."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        if netns is None:
            self._ipr: Any = IPRoute()
            return
        try:
            # flags=0: a missing namespace is an error; pyroute2 would otherwise create it.
            self._ipr = NetNS(netns, flags=0)
        except FileNotFoundError:
            raise FileNotFoundError(
                errno.ENOENT,
                f"network namespace {netns!r} does not exist",
                os.path.join("/run/netns", netns),
            ) from None

    def sample(self, names: Collection[str] | None = None) -> list[InterfaceSample]:
        """Every interface, or those of ``names`` that exist (a missing one is left out)."""
        links = self._ipr.get_links()
        at = time.monotonic()
        samples = [_sample(link, at) for link in links]
        if names is None:
            return samples
        wanted = set(names)
        return [sample for sample in samples if sample.name in wanted]

    def close(self) -> None:
        self._ipr.close()


@dataclass(frozen=True)
class InterfaceRates:
    """Traffic over the interval between two samples of one interface.

    An error or drop ratio is the share of the interval's frames in that direction that failed,
    ``errors / (packets + errors)`` (likewise for drops), and 0 when there were no frames. The
    kernel counts only good frames in ``*_packets``, so ``errors / packets`` alone would exceed
    1 on a failing link; this stays in [0, 1] and reaches 1 when every frame failed.

    ``reset`` is True when a counter went backwards (a 32-bit wrap, a driver reset) or the
    interface index changed (the interface was recreated): such counters are taken to have
    restarted from zero, so their delta is their value in ``after``.
    """

    name: str
    interval_s: float
    rx_bytes_per_s: float
    tx_bytes_per_s: float
    rx_packets_per_s: float
    tx_packets_per_s: float
    rx_error_ratio: float
    tx_error_ratio: float
    rx_drop_ratio: float
    tx_drop_ratio: float
    reset: bool


def _ratio(failed: int, delivered: int) -> float:
    attempted = failed + delivered
    return failed / attempted if attempted else 0.0


def rates(before: InterfaceSample, after: InterfaceSample) -> InterfaceRates:
    """Rates and failure ratios of one interface between two of its samples."""
    if before.name != after.name:
        raise ValueError(f"samples of different interfaces: {before.name!r}, {after.name!r}")
    interval = after.at - before.at
    if interval <= 0:
        raise ValueError(f"{after.name}: the second sample is not later than the first")
    recreated = before.index != after.index
    delta: dict[str, int] = {}
    for counter in COUNTERS:
        old, new = getattr(before, counter), getattr(after, counter)
        delta[counter] = new if recreated or new < old else new - old
    return InterfaceRates(
        name=after.name,
        interval_s=interval,
        rx_bytes_per_s=delta["rx_bytes"] / interval,
        tx_bytes_per_s=delta["tx_bytes"] / interval,
        rx_packets_per_s=delta["rx_packets"] / interval,
        tx_packets_per_s=delta["tx_packets"] / interval,
        rx_error_ratio=_ratio(delta["rx_errors"], delta["rx_packets"]),
        tx_error_ratio=_ratio(delta["tx_errors"], delta["tx_packets"]),
        rx_drop_ratio=_ratio(delta["rx_dropped"], delta["rx_packets"]),
        tx_drop_ratio=_ratio(delta["tx_dropped"], delta["tx_packets"]),
        reset=recreated or any(getattr(after, c) < getattr(before, c) for c in COUNTERS),
    )
