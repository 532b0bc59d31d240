"""discovery's wiring: heartbeat, bucket watch, local expiry, endpoints, service beats."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable

from meshmind import __version__
from meshmind.bus import (
    Bus,
    BusError,
    KeyValue,
    KvEntry,
    KvSnapshot,
    KvWatch,
    ServiceKit,
    background,
    get_logger,
    run,
)
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
from meshmind.membership import Change, HostLoadMeter, PeerView, least_loaded, refusal
from meshmind_discovery._config import DiscoverySettings

_log = get_logger(__name__)
EXPIRY_CHECK_S = 0.1
EXPIRY_MARGIN_S = 2 * EXPIRY_CHECK_S
"""Declare a peer left this much before its TTL runs out, so that with the check period and
delivery every host says so within the TTL of the failure itself."""
WATCH_HEARTBEAT_S = 0.4
"""How often the hub proves the bucket watch alive while the bucket is quiet."""
WATCH_LIVE_S = 1.0
"""The watch counts as heard while the hub sent it something this recently; longer silence
is the watch's, not the peers': nobody is expired until it is heard again."""
BIND_BUDGET_S = 15.0
"""How long one attempt to create or bind the peers bucket may take (slow links included)."""
BEAT_FRESH_S = 3.0
MAX_BEATS = 256


class Discovery:
    """One host's discovery: its announcement, its view, and the events it emits."""

    def __init__(self, bus: Bus, settings: DiscoverySettings) -> None:
        self.bus = bus
        self.settings = settings
        self.kv: KeyValue[PeerInfo] | None = None
        self.node = bus.node_id
        self.instance = secrets.token_hex(6)
        silence_s = max(settings.heartbeat_s, settings.ttl_s - EXPIRY_MARGIN_S)
        self.view = PeerView(self.node, silence_s, confirm_gap_s=WATCH_LIVE_S)
        self.started_at = time.time()
        self.meter = HostLoadMeter()
        self.beats: dict[str, tuple[ServiceBeat, float]] = {}
        self.reachable = False
        self.revision: int | None = None
        self.putting: asyncio.Task[None] | None = None
        self.put_started = 0.0
        self.watch: KvWatch[PeerInfo] | None = None
        self.refused = 0
        self.rivals: dict[str, float] = {}
        self.tasks: list[asyncio.Task[None]] = []

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
            instance=self.instance,
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

    async def bind(self) -> None:
        """Create or bind the peers bucket, retrying until the hub answers, then follow it.
        Its own task with its own budget: a slow hub link never delays the heartbeat."""
        while self.kv is None:
            try:
                async with asyncio.timeout(BIND_BUDGET_S):
                    self.kv = await self.bus.hub().key_value(
                        PEERS_BUCKET,
                        PeerInfo,
                        ttl_s=self.settings.ttl_s,
                        expiry_markers=True,
                        replicas=self.bus.settings.hub_replicas,
                    )
            except (BusError, TimeoutError) as error:
                _log.warning("hub.bind_failed", bucket=PEERS_BUCKET, error=str(error) or "timeout")
                await asyncio.sleep(self.settings.heartbeat_s)
        self.beat_now(self.kv)  # announce at once rather than at the next beat
        await self.follow(self.kv)

    async def heartbeat(self) -> None:
        """Announce this host at a fixed rate. A put is never abandoned: while one is in
        flight no other starts, and one in flight longer than the TTL means the hub is out
        of reach (it still completes or fails on its own)."""
        interval = self.settings.heartbeat_s
        next_at = self.now()
        while True:
            now = self.now()
            in_flight_s = now - self.put_started
            if (
                self.kv is not None
                and not self.beat_now(self.kv)
                and in_flight_s > self.settings.ttl_s
            ):
                self.lost_hub(TimeoutError(f"put in flight for {in_flight_s:.1f}s"))
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - self.now()))

    def beat_now(self, kv: KeyValue[PeerInfo]) -> bool:
        """Start announcing this host, unless an announcement is still in flight."""
        if self.putting is not None and not self.putting.done():
            return False
        self.putting = asyncio.create_task(self.put(kv))
        self.put_started = self.now()
        return True

    async def put(self, kv: KeyValue[PeerInfo]) -> None:
        try:
            self.revision = await kv.put(self.node, self.info())
        except BusError as error:  # unreachable, slow, or refused: all mean "not now"
            self.lost_hub(error)
            return
        if not self.reachable:
            _log.info("hub.reachable")
        self.reachable = True

    def lost_hub(self, error: BaseException) -> None:
        if self.reachable:
            _log.warning("hub.unreachable", error=repr(error))
        self.reachable = False

    async def follow(self, kv: KeyValue[PeerInfo]) -> None:
        """Turn the bucket into membership changes: each snapshot (at the start and whenever
        the watch had to be re-established) is reconciled with the view, each update and
        expiry marker applied."""
        async with kv.follow(heartbeat_s=WATCH_HEARTBEAT_S) as watch:
            self.watch = watch
            async for item in watch:
                if isinstance(item, KvSnapshot):
                    current = {
                        key: entry.value
                        for key, entry in item.entries.items()
                        if entry.value is not None and self.believed(key, entry.value)
                    }
                    _log.info("peers.reconciled", peers=len(current), restarts=watch.restarts)
                    await self.announce(self.view.reconcile(current, self.now()))
                else:
                    await self.apply(item)

    def believed(self, key: str, value: PeerInfo) -> bool:
        """Whether a record may enter the view: it names its key's node and did not start in
        the future; one that may not is logged and counted."""
        reason = refusal(key, value, time.time())
        if reason is not None:
            self.refused += 1
            _log.warning("peer.refused", key=key, reason=reason, refused=self.refused)
            return False
        if key == self.node and value.instance != self.instance:
            self.rival(value)
        return True

    def rival(self, other: PeerInfo) -> None:
        """Another live instance announces this node id: say so loudly, once per TTL."""
        now = self.now()
        if now - self.rivals.get(other.instance, -self.settings.ttl_s) >= self.settings.ttl_s:
            _log.error(
                "peer.duplicate_id",
                node=self.node,
                instance=self.instance,
                other_instance=other.instance,
                other_started_at=other.started_at,
            )
        self.rivals[other.instance] = now

    async def apply(self, entry: KvEntry[PeerInfo]) -> None:
        if entry.value is None:
            change = self.view.remove(entry.key)
        elif self.believed(entry.key, entry.value):
            change = self.view.put(entry.value, self.now())
        else:
            return
        if change is not None:
            await self.announce([change])

    async def expire(self) -> None:
        """Declare left a peer whose announcements stopped, even before the bucket says so;
        only while the watch is heard from, so silence is theirs, not ours."""
        while True:
            await asyncio.sleep(EXPIRY_CHECK_S)
            watch = self.watch
            silent_s = watch.silent_s() if watch is not None else WATCH_LIVE_S
            if watch is not None and not watch.replaying and silent_s < WATCH_LIVE_S:
                now = self.now()
                self.view.confirm(now - silent_s)  # the view is as current as the last word
                await self.announce(self.view.expire(now))

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
            duplicates=self.view.duplicates(now),
            refused=self.refused,
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
        """Stop announcing and leave at once (delete the key) rather than by expiry; only if
        the key still holds this instance's last announcement, never another instance's, and
        only when no other instance announced this id lately (its next beat could be the one
        a delete removes)."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.putting is not None:  # its revision is the one to delete
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.putting), 2)
        if self.watch is not None:
            await self.watch.close()
        if self.kv is None or self.revision is None or not self.reachable:
            return
        now = self.now()
        if any(now - at <= self.settings.ttl_s for at in self.rivals.values()):
            _log.warning("peer.leave_skipped", reason="another live instance announces this id")
            return
        try:
            async with asyncio.timeout(2):
                deleted = await self.kv.delete(self.node, revision=self.revision)
        except (BusError, TimeoutError) as error:
            _log.info("peer.leave_by_expiry", error=repr(error))
            return
        if not deleted:
            _log.warning("peer.leave_skipped", reason="another instance wrote the key since")


async def setup(bus: Bus, kit: ServiceKit) -> Callable[[], Awaitable[None]]:
    """Declare discovery's endpoints and start its loops; the hub may be out of reach."""
    discovery = Discovery(bus, DiscoverySettings())
    kit.endpoint(DISCOVERY_PEERS, discovery.peers, node=bus.node_id)
    kit.endpoint(DISCOVERY_PICK, discovery.pick, node=bus.node_id)
    await kit.subscribe(SERVICE_BEATS, discovery.on_beat, node=bus.node_id)
    discovery.tasks = [
        background(discovery.bind, "bind"),
        background(discovery.heartbeat, "heartbeat"),
        background(discovery.expire, "expire"),
    ]
    return discovery.close


def main() -> None:
    """Run discovery until SIGTERM."""
    run(DISCOVERY_SERVICE, __version__, setup, description="Who is in the mesh.")
