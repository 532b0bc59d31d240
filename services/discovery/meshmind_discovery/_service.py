"""discovery's wiring: heartbeat, bucket watch, local expiry, endpoints, service beats."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from meshmind import __version__
from meshmind.bus import Bus, BusError, KeyValue, ServiceKit, background, get_logger, run
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
MAX_BEATS = 256


class Discovery:
    """One host's discovery: its announcement, its view, and the events it emits."""

    def __init__(self, bus: Bus, settings: DiscoverySettings) -> None:
        self.bus = bus
        self.settings = settings
        self.kv: KeyValue[PeerInfo] | None = None
        self.node = bus.node_id
        silence_s = max(settings.heartbeat_s, settings.ttl_s - EXPIRY_MARGIN_S)
        self.view = PeerView(self.node, silence_s)
        self.started_at = time.time()
        self.meter = HostLoadMeter()
        self.beats: dict[str, tuple[ServiceBeat, float]] = {}
        self.reachable = False
        self.watch_live = False
        self.tasks: list[asyncio.Task[None]] = []
        self.watching: asyncio.Task[None] | None = None

    def now(self) -> float:
        return time.monotonic()

    def info(self) -> PeerInfo:
        """This host's announcement: the services that beat recently, load, capabilities."""
        now = self.now()
        self.beats = {k: (b, at) for k, (b, at) in self.beats.items() if now - at <= BEAT_FRESH_S}
        services = sorted({b.service for b, _ in self.beats.values()} | {DISCOVERY_SERVICE})
        queues: dict[str, int] = {}
        for beat, _ in self.beats.values():
            queues[beat.service] = queues.get(beat.service, 0) + beat.queue_depth
        cpu, mem = self.meter.read()
        return PeerInfo(
            node=self.node,
            services=services[:64],
            capabilities=self.settings.capabilities,
            load=HostLoad(cpu_pct=cpu, mem_pct=mem, queues=dict(list(queues.items())[:64])),
            version=__version__,
            started_at=self.started_at,
        )

    async def announce(self, changes: list[Change]) -> None:
        for change in changes:
            _log.info(f"peer.{change.kind}", peer=change.node)
            event = PeerChange(
                observer=self.node,
                node=change.node,
                kind=change.kind,
                peer=change.peer,
                at=time.time(),
            )
            try:
                await self.bus.publish(PEER_CHANGES, event, observer=self.node)
            except BusError as error:  # the view is right; only the event is lost
                _log.warning("peer.announce_failed", peer=change.node, error=str(error))

    async def heartbeat(self) -> None:
        """Announce this host at a fixed rate; track whether the hub answers."""
        interval = self.settings.heartbeat_s
        put_budget = max(0.2, min(interval, self.settings.ttl_s - interval))
        next_at = self.now()
        while True:
            try:
                async with asyncio.timeout(put_budget):
                    kv = self.kv or await self.bind()
                    await kv.put(self.node, self.info())
            except Exception as error:  # unreachable, slow, or refused: all mean "not now"
                self.lost_hub(error)
            else:
                if not self.reachable:
                    await self.reconnected(kv)
                self.view.confirm(self.now())
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - self.now()))

    async def bind(self) -> KeyValue[PeerInfo]:
        """The peers bucket, created on first use (the hub may be out of reach at start)."""
        self.kv = await self.bus.hub().key_value(
            PEERS_BUCKET,
            PeerInfo,
            ttl_s=self.settings.ttl_s,
            expiry_markers=True,
            replicas=self.bus.settings.hub_replicas,
        )
        return self.kv

    def lost_hub(self, error: BaseException) -> None:
        if self.reachable:
            _log.warning("hub.unreachable", error=repr(error))
        self.reachable = False
        self.watch_live = False
        if self.watching is not None:
            self.watching.cancel()
            self.watching = None

    async def reconnected(self, kv: KeyValue[PeerInfo]) -> None:
        """The hub answers (again): re-read the bucket, announce the differences, re-watch."""
        try:
            current = await kv.values()
        except BusError as error:
            _log.warning("hub.reconcile_failed", error=str(error))
            return
        self.reachable = True
        _log.info("hub.reachable", peers=len(current))
        await self.announce(self.view.reconcile(current, self.now()))
        self.watching = background(self.watch(kv), "watch")

    async def watch(self, kv: KeyValue[PeerInfo]) -> None:
        """Turn the bucket's updates and expiry markers into membership changes; a watch that
        ends or fails is started again (it replays each key's current entry)."""
        while True:
            try:
                async for entry in kv.watch():
                    self.watch_live = True
                    await self.apply(entry.key, entry.value)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                _log.warning("watch.failed", error=repr(error))
            self.watch_live = False
            await asyncio.sleep(self.settings.heartbeat_s)

    async def apply(self, key: str, value: PeerInfo | None) -> None:
        if value is not None and value.node != key:
            _log.warning("peer.key_mismatch", key=key, node=value.node)
            return
        change = self.view.put(value, self.now()) if value is not None else self.view.remove(key)
        if change is not None:
            await self.announce([change])

    async def expire(self) -> None:
        """Declare left a peer whose announcements stopped, even before the bucket says so;
        only while the hub answers and the watch delivers, so silence is theirs, not ours."""
        while True:
            await asyncio.sleep(EXPIRY_CHECK_S)
            if self.reachable and self.watch_live:
                await self.announce(self.view.expire(self.now()))

    async def on_beat(self, beat: ServiceBeat) -> None:
        if beat.node == self.node and (beat.instance in self.beats or len(self.beats) < MAX_BEATS):
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
        tasks = [*self.tasks, *([self.watching] if self.watching else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.kv is not None and self.reachable:
            try:
                async with asyncio.timeout(2):
                    await self.kv.delete(self.node)
            except (BusError, TimeoutError) as error:
                _log.info("peer.leave_by_expiry", error=repr(error))


async def setup(bus: Bus, kit: ServiceKit) -> Callable[[], Awaitable[None]]:
    """Declare discovery's endpoints and start its loops; the hub may be out of reach."""
    discovery = Discovery(bus, DiscoverySettings())
    kit.endpoint(DISCOVERY_PEERS, discovery.peers, node=bus.node_id)
    kit.endpoint(DISCOVERY_PICK, discovery.pick, node=bus.node_id)
    await kit.subscribe(SERVICE_BEATS, discovery.on_beat, node=bus.node_id)
    discovery.tasks = [
        background(discovery.heartbeat(), "heartbeat"),
        background(discovery.expire(), "expire"),
    ]
    return discovery.close


def main() -> None:
    """Run discovery until SIGTERM."""
    run(DISCOVERY_SERVICE, __version__, setup, description="Who is in the mesh.")
