"""health-monitor's wiring: probe peers, score links, publish changes, keep the bucket."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from meshmind import __version__
from meshmind.bus import Bus, BusError, Empty, KeyValue, ServiceKit, background, get_logger, run
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
from meshmind.health import LinkTable, ProbeRotation
from meshmind_health_monitor._config import HealthSettings
from meshmind_health_monitor._sources import BatmanSource, InterfaceSource

_log = get_logger(__name__)


class Monitor:
    """One host's monitor: what it probes, what it measured, what it last published."""

    def __init__(self, bus: Bus, settings: HealthSettings) -> None:
        self.bus = bus
        self.settings = settings
        self.kv: KeyValue[LinkReport] | None = None
        self.storing: set[str] = set()
        self.node = bus.node_id
        self.links = LinkTable(self.node)
        self.rotation = ProbeRotation(settings.probe_fanout)
        self.peers: dict[str, float] = {}  # peer -> monotonic time it was last listed
        self.seq = 0
        self.interfaces = InterfaceSource(settings.interfaces)
        self.batman = BatmanSource(settings.batman_iface)
        self.interface_health: list[InterfaceHealth] = []
        self.stored_at: dict[str, float] = {}
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

    async def probe(self, peer: str) -> None:
        self.seq += 1
        start = time.perf_counter()
        rtt_ms: float | None
        try:
            await self.bus.request(
                HEALTH_PROBE,
                Probe(origin=self.node, seq=self.seq),
                node=peer,
                timeout=self.settings.timeout_s,
            )
            rtt_ms = (time.perf_counter() - start) * 1000
        except BusError:
            rtt_ms = None
        if peer not in self.peers:  # it left while the probe was out: forget, do not revive
            return
        change = self.links.record(peer, rtt_ms, time.time())
        if change is not None:
            await self.publish(change)
        if peer not in self.storing:  # the hub may be slow or gone: never hold up probing
            self.storing.add(peer)
            background(self.store(peer, force=change is not None), f"store {peer}")

    async def publish(self, change: LinkChange) -> None:
        link = change.link
        _log.info(
            "link.changed",
            target=link.target,
            state=link.state,
            previous=change.previous,
            score=round(link.score, 3),
        )
        await self.bus.publish(LINK_CHANGES, change, node=self.node)

    async def store(self, peer: str, *, force: bool) -> None:
        """Keep the link's report in the hub bucket: on change, and refreshed regularly."""
        try:
            now = time.monotonic()
            if not force and now - self.stored_at.get(peer, 0.0) < self.settings.report_every_s:
                return
            report = next((r for r in self.links.reports() if r.target == peer), None)
            if report is None:
                return
            async with asyncio.timeout(self.settings.probe_interval_s):
                kv = self.kv or await self.bind()
                await kv.put(f"{self.node}.{peer}", report)
            self.stored_at[peer] = now
        except (BusError, TimeoutError) as error:  # hub out of reach: events still flow locally
            _log.debug("links.store_failed", error=repr(error))
        finally:
            self.storing.discard(peer)

    async def bind(self) -> KeyValue[LinkReport]:
        """The links bucket, created on first use (the hub may be out of reach at start)."""
        self.kv = await self.bus.hub().key_value(
            LINKS_BUCKET,
            LinkReport,
            ttl_s=6 * self.settings.report_every_s,
            replicas=self.bus.settings.hub_replicas,
        )
        return self.kv

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
        background(monitor.follow_peers(), "follow-peers"),
        background(monitor.probe_loop(), "probe"),
        background(monitor.read_sources(), "sources"),
    ]
    return monitor.close


def main() -> None:
    """Run the health-monitor until SIGTERM."""
    run(HEALTH_SERVICE, __version__, setup, description="How good each link is.")
