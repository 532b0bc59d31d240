"""discovery's wiring: heartbeat, bucket watch, local expiry, endpoints, service beats."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from meshmind import __version__
from meshmind.bus import Bus, BusError, HubUnavailable, KeyValue, ServiceKit, get_logger, run
from meshmind.bus.protocol import (
    DISCOVERY_PEERS,
    DISCOVERY_PICK,
    DISCOVERY_SERVICE,
    PEER_CHANGES,
    PEERS_BUCKET,
    SERVICE_BEATS,
    HostLoad,
    PeerChange,
    PeerInfo,
    PeerList,
    PeerPick,
    PeerQuery,
    ServiceBeat,
)
from meshmind.membership import Change, HostLoadMeter, PeerView, least_loaded
from meshmind_discovery._config import DiscoverySettings

_log = get_logger(__name__)
EXPIRY_CHECK_S = 0.1
EXPIRY_MARGIN_S = 2 * EXPIRY_CHECK_S
"""Declare a peer left this much before its TTL runs out, so that with the check period and
delivery every host says so within the TTL of the failure itself."""
BEAT_FRESH_S = 3.0


class Discovery:
    """One host's discovery: its announcement, its view, and the events it emits."""

    def __init__(self, bus: Bus, settings: DiscoverySettings, kv: KeyValue[PeerInfo]) -> None:
        self.bus = bus
        self.settings = settings
        self.kv = kv
        self.node = bus.node_id
        self.view = PeerView(self.node, max(settings.heartbeat_s, settings.ttl_s - EXPIRY_MARGIN_S))
        self.started_at = time.time()
        self.meter = HostLoadMeter()
        self.beats: dict[str, tuple[ServiceBeat, float]] = {}
        self.reachable = False
        self.tasks: list[asyncio.Task[None]] = []
        self.watching: asyncio.Task[None] | None = None

    def now(self) -> float:
        return time.monotonic()

    def info(self) -> PeerInfo:
        """This host's announcement: the services that beat recently, load, capabilities."""
        fresh = {k: b for k, (b, at) in self.beats.items() if self.now() - at <= BEAT_FRESH_S}
        services = sorted({b.service for b in fresh.values()} | {DISCOVERY_SERVICE})
        queues: dict[str, int] = {}
        for beat in fresh.values():
            queues[beat.service] = queues.get(beat.service, 0) + beat.queue_depth
        cpu, mem = self.meter.read()
        return PeerInfo(
            node=self.node,
            services=services,
            capabilities=self.settings.capabilities,
            load=HostLoad(cpu_pct=cpu, mem_pct=mem, queues=queues),
            version=__version__,
            started_at=self.started_at,
        )

    async def announce(self, changes: list[Change]) -> None:
        for change in changes:
            _log.info(f"peer.{change.kind}", peer=change.node)
            await self.bus.publish(
                PEER_CHANGES,
                PeerChange(
                    observer=self.node,
                    node=change.node,
                    kind=change.kind,
                    peer=change.peer,
                    at=time.time(),
                ),
                observer=self.node,
            )

    async def heartbeat(self) -> None:
        """Announce this host every interval; track whether the hub answers."""
        while True:
            try:
                await self.kv.put(self.node, self.info())
            except (HubUnavailable, BusError) as error:
                if self.reachable:
                    _log.warning("hub.unreachable", error=str(error))
                self.reachable = False
            else:
                if not self.reachable:
                    await self.reconnected()
                self.view.confirm(self.now())
            await asyncio.sleep(self.settings.heartbeat_s)

    async def reconnected(self) -> None:
        """The hub answers (again): re-read the bucket, announce the differences, re-watch."""
        try:
            current = await self.kv.values()
        except BusError as error:
            _log.warning("hub.reconcile_failed", error=str(error))
            return
        self.reachable = True
        _log.info("hub.reachable", peers=len(current))
        await self.announce(self.view.reconcile(current, self.now()))
        if self.watching is not None:
            self.watching.cancel()
        self.watching = asyncio.create_task(self.watch())

    async def watch(self) -> None:
        """Turn the bucket's updates and expiry markers into membership changes."""
        async for entry in self.kv.watch():
            if entry.value is not None:
                change = self.view.put(entry.value, self.now())
            else:
                change = self.view.remove(entry.key)
            if change is not None:
                await self.announce([change])

    async def expire(self) -> None:
        """Declare left a peer whose announcements stopped, even before the bucket says so."""
        while True:
            await asyncio.sleep(EXPIRY_CHECK_S)
            if self.reachable:
                await self.announce(self.view.expire(self.now()))

    async def on_beat(self, beat: ServiceBeat) -> None:
        if beat.node == self.node:
            self.beats[beat.instance] = (beat, self.now())

    async def peers(self, query: PeerQuery) -> PeerList:
        now = self.now()
        return PeerList(
            observer=self.node,
            peers=self.view.peers(query.capability),
            stale=self.is_stale(now),
            age_s=self.view.age(now),
        )

    async def pick(self, query: PeerQuery) -> PeerPick:
        now = self.now()
        return PeerPick(
            observer=self.node,
            peer=least_loaded(self.view.peers(), query.capability),
            stale=self.is_stale(now),
            age_s=self.view.age(now),
        )

    def is_stale(self, now: float) -> bool:
        return not self.reachable or self.view.stale(now, 2 * self.settings.heartbeat_s)

    async def close(self) -> None:
        """Stop announcing and leave at once (delete the key) rather than by expiry."""
        for task in [*self.tasks, *([self.watching] if self.watching else [])]:
            task.cancel()
        with contextlib.suppress(BusError):
            await asyncio.wait_for(self.kv.delete(self.node), 2)


async def setup(bus: Bus, kit: ServiceKit) -> Callable[[], Awaitable[None]]:
    """Declare discovery's endpoints and start its loops."""
    settings = DiscoverySettings()
    kv = await bus.hub().key_value(
        PEERS_BUCKET, PeerInfo, ttl_s=settings.ttl_s, expiry_markers=True
    )
    discovery = Discovery(bus, settings, kv)
    kit.endpoint(DISCOVERY_PEERS, discovery.peers, node=bus.node_id)
    kit.endpoint(DISCOVERY_PICK, discovery.pick, node=bus.node_id)
    await kit.subscribe(SERVICE_BEATS, discovery.on_beat, node=bus.node_id)
    discovery.tasks = [
        asyncio.create_task(discovery.heartbeat()),
        asyncio.create_task(discovery.expire()),
    ]
    return discovery.close


def main() -> None:
    """Run discovery until SIGTERM."""
    run(DISCOVERY_SERVICE, __version__, setup, description="Who is in the mesh.")
