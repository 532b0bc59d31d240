"""health-monitor's wiring: probe peers, score links, publish changes, keep the bucket."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from meshmind import __version__
from meshmind.bus import (
    Bus,
    BusError,
    Empty,
    KeyValue,
    ServiceKit,
    background,
    get_logger,
    run,
    traced,
)
from meshmind.bus.protocol import (
    DISCOVERY_PEERS,
    HEALTH_HOST,
    HEALTH_LINKS,
    HEALTH_PROBE,
    HEALTH_SERVICE,
    LINK_CHANGES,
    LINKS_BUCKET,
    HostHealth,
    InterfaceHealth,
    LinkChange,
    LinkList,
    LinkReport,
    PeerQuery,
    Probe,
    ProbeReply,
)
from meshmind.health import LinkTable, ProbeRotation, link_key, reply_mismatch
from meshmind_health_monitor._config import HealthSettings
from meshmind_health_monitor._sources import BatmanSource, InterfaceSource

_log = get_logger(__name__)


BIND_BUDGET_S = 30.0
"""One attempt at creating or binding the links bucket may take this long (two round trips
to the hub, over whatever link this host has)."""


class Monitor:
    """One host's monitor: what it probes, what it measured, what it still has to store."""

    def __init__(self, bus: Bus, settings: HealthSettings) -> None:
        self.bus = bus
        self.settings = settings
        self.node = bus.node_id
        self.links = LinkTable(self.node)
        self.rotation = ProbeRotation(settings.probe_fanout)
        self.peers: dict[str, float] = {}  # peer -> monotonic time it was last listed
        self.seq = 0
        self.interfaces = InterfaceSource(settings.interfaces)
        self.batman = BatmanSource(settings.batman_iface)
        self.interface_health: list[InterfaceHealth] = []
        self.unstored: dict[str, LinkReport] = {}  # target -> newest report not yet stored
        self.store_wanted = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def follow_peers(self) -> None:
        """Keep the peer list from this host's discovery; peers that left linger a while."""
        while True:
            try:
                listed = await self.bus.request(
                    DISCOVERY_PEERS, PeerQuery(), node=self.node, timeout=2
                )
            except BusError as error:
                _log.debug("peers.unavailable", error=str(error))
            else:
                now = time.monotonic()
                for peer in listed.peers:
                    if peer.node != self.node:
                        self.peers[peer.node] = now
                for node, seen in list(self.peers.items()):
                    if now - seen > self.settings.peer_linger_s:
                        del self.peers[node]
                        self.links.forget(node)
                self.rotation.update(self.peers)
            await asyncio.sleep(min(2.0, self.settings.probe_interval_s))

    async def probe_loop(self) -> None:
        """Every interval, probe the next peers in the rotation, all at once."""
        while True:
            started = time.monotonic()
            batch = self.rotation.next_batch()
            if batch:
                await asyncio.gather(*(self.probe(peer) for peer in batch))
            await asyncio.sleep(
                max(0.0, self.settings.probe_interval_s - (time.monotonic() - started))
            )

    async def read_sources(self) -> None:
        """Read the host sources every interval, apart from probing so they cannot stall it."""
        while True:
            self.interface_health = await self.interfaces.read()
            await self.batman.read()
            await asyncio.sleep(self.settings.probe_interval_s)

    @traced("probe")  # the link event a probe causes is in the probe's trace
    async def probe(self, peer: str) -> None:
        """Probe ``peer`` once; a reply that does not answer this very probe counts as lost."""
        self.seq += 1
        probe = Probe(origin=self.node, seq=self.seq)
        start = time.perf_counter()
        rtt_ms: float | None = None
        try:
            reply = await self.bus.request(
                HEALTH_PROBE, probe, node=peer, timeout=self.settings.timeout_s
            )
        except BusError:
            pass
        else:
            mismatch = reply_mismatch(peer, probe, reply)
            if mismatch is None:
                rtt_ms = (time.perf_counter() - start) * 1000
            else:
                _log.warning("probe.mismatched_reply", peer=peer, reason=mismatch)
        if peer not in self.peers:  # it left while the probe was out: forget, do not revive
            return
        change = self.links.record(peer, rtt_ms, time.time())
        if change is not None:
            self.unstored[peer] = change.link
            self.store_wanted.set()
            await self.publish(change)

    async def publish(self, change: LinkChange) -> None:
        link = change.link
        _log.info(
            "link.changed",
            target=link.target,
            state=link.state,
            previous=change.previous,
            score=round(link.score, 3),
        )
        try:
            await self.bus.publish(LINK_CHANGES, change, node=self.node)
        except BusError as error:  # our own server is out of reach: the bucket catches up later
            _log.debug("link.publish_failed", error=repr(error))

    async def keep_stored(self) -> None:
        """Keep every link's report in the hub bucket: a change at once, every link each report
        interval. This task alone waits on the hub, so a slow or absent hub never holds up
        probing; a put that fails or times out is retried with the link's newest report."""
        kv = await self.bind()
        loop = asyncio.get_running_loop()
        refresh_at = loop.time()
        while True:
            if loop.time() >= refresh_at:
                self.unstored.update({r.target: r for r in self.links.reports()})
                refresh_at = loop.time() + self.settings.report_every_s
            if self.unstored and not await self.store_unstored(kv):
                await asyncio.sleep(self.settings.probe_interval_s)  # the hub is slow or away
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, refresh_at - loop.time())):
                    await self.store_wanted.wait()

    async def store_unstored(self, kv: KeyValue[LinkReport]) -> bool:
        """Put every unstored report at once; whether all of them were stored."""
        self.store_wanted.clear()
        batch, self.unstored = self.unstored, {}
        reports = list(batch.values())
        stored = await asyncio.gather(*(self.store(kv, report) for report in reports))
        for report, done in zip(reports, stored, strict=True):
            if not done:
                self.unstored.setdefault(report.target, report)  # unless a newer one came
        return all(stored)

    async def store(self, kv: KeyValue[LinkReport], report: LinkReport) -> bool:
        try:
            async with asyncio.timeout(self.settings.store_timeout_s):
                await kv.put(link_key(report.source, report.target), report)
        except (BusError, TimeoutError) as error:  # hub out of reach: events still flow locally
            _log.debug("links.store_failed", target=report.target, error=repr(error))
            return False
        return True

    async def bind(self) -> KeyValue[LinkReport]:
        """The links bucket, created on first use; the hub may be slow or out of reach, so an
        attempt has a generous budget of its own and a failed one is tried again."""
        while True:
            try:
                async with asyncio.timeout(BIND_BUDGET_S):
                    return await self.bus.hub().key_value(
                        LINKS_BUCKET,
                        LinkReport,
                        ttl_s=self.settings.links_ttl_s,
                        replicas=self.bus.settings.hub_replicas,
                    )
            except (BusError, TimeoutError) as error:
                _log.warning("links.bind_failed", error=repr(error))
            await asyncio.sleep(self.settings.probe_interval_s)

    async def answer(self, probe: Probe) -> ProbeReply:
        return ProbeReply(node=self.node, seq=probe.seq)

    async def link_list(self, _: Empty) -> LinkList:
        return LinkList(node=self.node, links=self.links.reports())

    async def host(self, _: Empty) -> HostHealth:
        return HostHealth(
            node=self.node,
            state=self.links.worst_state(),
            links=self.links.reports(),
            interfaces=self.interface_health,
            sources={
                "probes": "on",
                self.interfaces.name: self.interfaces.status,
                self.batman.name: self.batman.status,
            },
        )

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self.tasks, return_exceptions=True)


async def setup(bus: Bus, kit: ServiceKit) -> Callable[[], Awaitable[None]]:
    """Declare the monitor's endpoints and start probing."""
    monitor = Monitor(bus, HealthSettings())
    await monitor.interfaces.open()
    await monitor.batman.open()
    kit.endpoint(HEALTH_PROBE, monitor.answer, node=bus.node_id)
    kit.endpoint(HEALTH_LINKS, monitor.link_list, node=bus.node_id)
    kit.endpoint(HEALTH_HOST, monitor.host, node=bus.node_id)
    monitor.tasks = [
        background(monitor.follow_peers, "follow-peers"),
        background(monitor.probe_loop, "probe"),
        background(monitor.read_sources, "sources"),
        background(monitor.keep_stored, "store-links"),
    ]
    return monitor.close


def main() -> None:
    """Run the health-monitor until SIGTERM."""
    run(HEALTH_SERVICE, __version__, setup, description="How good each link is.")
