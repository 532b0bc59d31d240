"""health-monitor's host-level sources: netlink interfaces and batman-adv, each reported once
when absent and then left off."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from meshmind.bus import get_logger
from meshmind.bus.protocol import InterfaceHealth
from meshmind.health import (
    BatmanAdv,
    InterfaceSample,
    NetlinkInterfaces,
    link_quality,
    rates,
)

_log = get_logger(__name__)
T = TypeVar("T")

# pyroute2's synchronous sockets run an event loop of their own: they live on one thread
# of their own, away from the service's loop.
_NETLINK_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlink")


async def on_netlink_thread(call: Callable[[], T]) -> T:
    """Run a netlink call on the netlink thread."""
    return await asyncio.get_running_loop().run_in_executor(_NETLINK_THREAD, call)


class InterfaceSource:
    """Interface state and error/drop ratios over the last interval, via pyroute2."""

    name = "netlink"

    def __init__(self, names: list[str]) -> None:
        self._names = names or None
        self._netlink: NetlinkInterfaces | None = None
        self._last: dict[str, InterfaceSample] = {}
        self.status = "starting"

    async def open(self) -> None:
        """Open the netlink socket, or report once that there is none."""
        try:
            self._netlink = await on_netlink_thread(NetlinkInterfaces)
            self.status = "on"
        except Exception as error:  # any failure to open means: this host has no such source
            self._off(f"netlink unavailable: {error!r}")

    def _off(self, reason: str) -> None:
        self.status = f"off: {reason}"
        self._netlink = None
        _log.warning("source.absent", source=self.name, reason=reason)

    async def read(self) -> list[InterfaceHealth]:
        """Each interface's state now and its ratios since the previous read."""
        if self._netlink is None:
            return []
        try:
            netlink, names = self._netlink, self._names
            samples = await on_netlink_thread(lambda: netlink.sample(names))
        except Exception as error:  # a source that fails is turned off, never fatal
            self._off(f"netlink read failed: {error!r}")
            return []
        found = []
        for sample in samples:
            before = self._last.get(sample.name)
            ratios = rates(before, sample) if before else None
            found.append(
                InterfaceHealth(
                    name=sample.name,
                    up=sample.up,
                    oper_state=sample.oper_state,
                    rx_error_ratio=ratios.rx_error_ratio if ratios else 0.0,
                    tx_error_ratio=ratios.tx_error_ratio if ratios else 0.0,
                    rx_drop_ratio=ratios.rx_drop_ratio if ratios else 0.0,
                    tx_drop_ratio=ratios.tx_drop_ratio if ratios else 0.0,
                )
            )
        self._last = {s.name: s for s in samples}
        return found


class BatmanSource:
    """batman-adv originators with their link quality, where the module is loaded."""

    name = "batman-adv"

    def __init__(self, mesh_iface: str) -> None:
        self._mesh_iface = mesh_iface
        self._batman: BatmanAdv | None = None
        self.status = "starting"

    async def open(self) -> None:
        """Open the generic netlink family, or report once that the module is absent."""
        try:
            self._batman = await on_netlink_thread(BatmanAdv.open)
            self.status = "on"
        except Exception as error:  # BatmanUnavailable, or no permission, or anything else
            self.status = f"off: {error}"
            _log.info("source.absent", source=self.name, reason=str(error))

    async def read(self) -> dict[str, float]:
        """Link quality per originator MAC address."""
        if self._batman is None:
            return {}
        try:
            batman, iface = self._batman, self._mesh_iface
            originators = await on_netlink_thread(lambda: batman.originators(iface))
            qualities = {o.originator: link_quality(o) for o in originators if o.best}
        except Exception as error:  # a source that fails is turned off, never fatal
            self.status = f"off: {error}"
            self._batman = None
            _log.warning("source.absent", source=self.name, reason=str(error))
            return {}
        self.status = f"on: {len(originators)} originators"
        return qualities
