"""The ``raft`` backend: a :class:`RaftDriver` among the hosts, its messages over NATS."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshmind.bus import (
    Bus,
    BusError,
    Empty,
    NoResponders,
    Subscription,
    background,
    get_logger,
)
from meshmind.bus.protocol import (
    CONSENSUS_COMMITTED,
    CONSENSUS_STATUS,
    DISCOVERY_PEERS,
    RAFT_MESSAGES,
    AppliedEntry,
    CommittedEntries,
    ConsensusMember,
    ConsensusStatus,
    MemberChange,
    PeerQuery,
    RaftBatch,
)
from meshmind.consensus._backend import BackendName, Unavailable
from meshmind.consensus._balancer import Balancer, Transfer, candidates
from meshmind.consensus._commands import (
    AppendDecision,
    Batch,
    Cas,
    CasAppend,
    Command,
    Delete,
    LeaseGrant,
    LeaseRelease,
    LeaseRenew,
    Put,
    Tick,
    decode_command,
    encode_command,
)
from meshmind.consensus._driver import DriverSettings, RaftDriver
from meshmind.consensus._model import Result
from meshmind.consensus._state import StoreState
from meshmind.consensus._state_backend import Stamped, StateBackend
from meshmind.health import read_links
from meshmind.raft import ConfChange, ConfChangeKind, DiskStorage, Entry, EntryKind, RaftError

_log = get_logger(__name__)

_MEMBER_KINDS = {
    "add-voter": ConfChangeKind.ADD_VOTER,
    "add-learner": ConfChangeKind.ADD_LEARNER,
    "remove": ConfChangeKind.REMOVE,
}
PUBLISH_EVERY_S = 0.05
"""How often applied entries are published, batched."""
PUBLISH_ENTRIES = 500
"""The most applied entries one event carries."""
BALANCE_READ_S = 5.0
"""How long the balancer waits for discovery's peers and for the links bucket."""
BALANCE_COMMIT_S = 30.0
"""How long the balancer waits for its membership change to commit before trying afresh."""
SUSPECT_TICKS = 3
"""Ticks without a word from the leader before a follower asks whether its service is there;
also the stagger between the surviving voters' campaigns."""
_OPS = {
    Put: "put",
    Cas: "cas",
    CasAppend: "cas",
    Delete: "delete",
    LeaseGrant: "lease",
    LeaseRenew: "lease",
    LeaseRelease: "lease",
    AppendDecision: "decision",
    Tick: "tick",
    Batch: "batch",
}


class _DecodedOnce:
    """The store as the driver applies it: each entry's command is decoded once, and the
    last one kept for the applied-entry events, which the driver raises right after."""

    def __init__(self, state: StoreState) -> None:
        self.state = state
        self.last: Command | None = None

    def apply_bytes(self, data: bytes) -> Result:
        self.last = None
        command = decode_command(data)
        self.last = command
        return self.state.apply(command)

    def snapshot(self) -> bytes:
        return self.state.snapshot()

    def restore(self, data: bytes) -> None:
        self.state.restore(data)


def _applied(entry: Entry, command: Command, result: Any) -> AppliedEntry:
    ok = not isinstance(result, Exception)
    revision: int | None = None
    if isinstance(result, Result):
        ok = result.ok
        if result.current is not None:
            revision = result.current.revision
        elif result.decision is not None:
            revision = result.decision.seq
    return AppliedEntry(
        index=entry.index,
        term=entry.term,
        op=_OPS[type(command)],
        key=getattr(command, "key", None),
        ok=ok,
        revision=revision,
    )


@dataclass(frozen=True)
class RaftBackendSettings:
    """The initial cluster, where the log lives, and timing."""

    peers: tuple[str, ...]
    data_dir: Path
    tick_s: float = 0.1
    election_ticks: int = 10
    snapshot_every: int = 1000
    lease_tick_s: float = 1.0
    balance_every_s: float = 2.0
    """How often the leader re-balances voters and learners (0: never)."""
    member_grace_s: float = 120.0
    """How long a member may be missing from discovery's peers before it is removed."""


class RaftBackend(StateBackend):
    """The consensus store replicated by Raft among the hosts' consensus services."""

    name: BackendName = "raft"

    def __init__(self, bus: Bus, settings: RaftBackendSettings) -> None:
        super().__init__(StoreState())
        self._bus = bus
        self.settings = settings
        self.node = bus.node_id
        self.driver: RaftDriver | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subscription: Subscription | None = None
        self._applied: list[AppliedEntry] = []
        self._decoded = _DecodedOnce(self.state)

    async def start(self) -> None:
        """Open the log, join the group, start the loop, the clock and the event feed."""
        voters = frozenset(self.settings.peers) or frozenset({self.node})
        if self.node not in voters:
            raise ValueError(f"CONSENSUS_PEERS must name this host ({self.node}) on first start")
        directory = self.settings.data_dir / self.node
        storage = await asyncio.to_thread(DiskStorage.open, directory)
        driver = RaftDriver(
            self.node,
            voters,
            storage,
            self._decoded,
            self._send,
            DriverSettings(
                tick_s=self.settings.tick_s,
                election_ticks=self.settings.election_ticks,
                snapshot_every=self.settings.snapshot_every,
            ),
        )
        driver.on_applied = self._record_applied
        self.driver = driver

        async def on_batch(batch: RaftBatch) -> None:
            driver.receive(batch.node, batch.messages)

        self._subscription = await self._bus.subscribe(RAFT_MESSAGES, on_batch, peer=self.node)
        self._tasks = [
            background(driver.run, "raft.loop"),
            background(self._clock, "raft.clock"),
            background(self._publish_applied, "raft.committed"),
            background(self._watch_leader, "raft.watch_leader"),
        ]
        if self.settings.balance_every_s > 0:
            self._tasks.append(background(self._balance, "raft.balance"))

    async def stop(self) -> None:
        """Stop the loop and close the log (durable at every step: nothing is left to flush)."""
        if self._subscription is not None:
            with contextlib.suppress(BusError):
                await self._subscription.unsubscribe()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.driver is not None:
            await self.driver.close()

    async def _send(self, peer: str, frames: list[bytes]) -> None:
        batch = RaftBatch(node=self.node, peer=peer, messages=frames)
        await self._bus.publish(RAFT_MESSAGES, batch, node=self.node, peer=peer)

    def _driver(self) -> RaftDriver:
        if self.driver is None:
            raise Unavailable("the raft backend has not started")
        return self.driver

    # ---- the leader's clock

    async def _clock(self) -> None:
        """While leading, commit the time now and then, so leases expire without writes."""
        while True:
            await asyncio.sleep(self.settings.lease_tick_s)
            driver = self._driver()
            if driver.is_leader:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.settings.lease_tick_s):
                        await driver.propose(encode_command(Tick(time.time())))

    # ---- a follower's failure detector

    async def _watch_leader(self) -> None:
        """Fail over without waiting out the election timeout when the leader's service is gone.

        A follower that has not heard from its leader for ``SUSPECT_TICKS`` ticks asks the
        leader's status endpoint. NATS answers "no responders" at once when no consensus
        service serves that host (it died, or its leaf left the hub); an answer or a timeout
        (a slow or silently cut link) proves nothing and changes nothing. On "no responders"
        the follower forgets the leader, and the surviving voters campaign one after another in
        id order, the first a tick later (the others find the leader gone meanwhile) and the
        rest ``SUSPECT_TICKS`` ticks apart, until one wins; those that forgot vote at once.
        """
        tick = self.settings.tick_s
        while True:
            await asyncio.sleep(tick)
            driver = self._driver()
            leader = driver.node.leader
            if leader is None or leader == self.node or driver.node.silent_ticks < SUSPECT_TICKS:
                continue
            try:
                await self._bus.request(
                    CONSENSUS_STATUS, Empty(), node=leader, timeout=SUSPECT_TICKS * tick
                )
            except NoResponders:
                pass
            except BusError:
                continue
            else:  # alive, its heartbeats late: ask again only after as long again
                await asyncio.sleep(SUSPECT_TICKS * tick)
                continue
            if driver.node.leader != leader:
                continue
            _log.info("raft.leader_gone", leader=leader)
            driver.forget_leader()
            survivors = sorted(driver.node.conf.voters - {leader})
            if self.node not in survivors:
                continue
            # one tick for the others to find it gone too, then in turn
            await asyncio.sleep((1 + survivors.index(self.node) * SUSPECT_TICKS) * tick)
            if driver.node.leader is None:
                with contextlib.suppress(RaftError):
                    driver.campaign()

    # ---- the leader's membership balancer

    async def _balance(self) -> None:
        """While leading: now and then, one membership change towards the group the live hosts
        and their links call for, applied and committed before the next is considered."""
        every = self.settings.balance_every_s
        balancer: Balancer | None = None
        while True:
            await asyncio.sleep(every)
            driver = self._driver()
            if not driver.is_leader:
                balancer = None  # a leader tracks absences from its own term on
                continue
            balancer = balancer or Balancer(self.node, self.settings.member_grace_s)
            try:
                peers = await self._bus.request(
                    DISCOVERY_PEERS, PeerQuery(), timeout=BALANCE_READ_S, node=self.node
                )
                async with asyncio.timeout(BALANCE_READ_S):
                    links = await read_links(self._bus)
            except (BusError, TimeoutError) as error:
                _log.debug("raft.balance_skipped", reason=repr(error))
                continue
            if peers.stale or self.node not in {peer.node for peer in peers.peers}:
                continue
            now = time.time()
            live = candidates(peers.peers, links.accepted, now)
            action = balancer.step(now, driver.node.conf, live)
            if isinstance(action, Transfer):
                _log.info("raft.balance_transfer", to=action.to)
                with contextlib.suppress(RaftError, ValueError):
                    driver.transfer(action.to)
            elif action is not None:
                _log.info("raft.balance_change", change=action.kind.value, node=action.node)
                try:
                    async with asyncio.timeout(BALANCE_COMMIT_S):
                        await driver.change_members(action)
                except (RaftError, ValueError, TimeoutError) as error:
                    _log.warning("raft.balance_failed", node=action.node, error=repr(error))

    # ---- applied entries as events

    def _record_applied(self, entry: Entry, result: Any) -> None:
        """One event per entry; a batch's, one per write."""
        op = {EntryKind.CONFIG: "config", EntryKind.NOOP: "noop"}.get(entry.kind, "command")
        command = self._decoded.last if entry.kind is EntryKind.NORMAL else None
        if isinstance(command, Batch) and isinstance(result, Result):
            for write, outcome in zip(command.writes, result.writes, strict=True):
                self._applied.append(_applied(entry, write, outcome))
        elif command is not None:
            self._applied.append(_applied(entry, command, result))
        else:
            ok = not isinstance(result, Exception)
            self._applied.append(AppliedEntry(index=entry.index, term=entry.term, op=op, ok=ok))

    async def _publish_applied(self) -> None:
        """Every ``PUBLISH_EVERY_S``, all that was applied meanwhile, in events of at most
        ``PUBLISH_ENTRIES`` entries (a batch applies hundreds of writes at once)."""
        while True:
            await asyncio.sleep(PUBLISH_EVERY_S)
            pending, self._applied = self._applied, []
            for start in range(0, len(pending), PUBLISH_ENTRIES):
                entries = pending[start : start + PUBLISH_ENTRIES]
                event = CommittedEntries(node=self.node, entries=entries)
                try:
                    await self._bus.publish(CONSENSUS_COMMITTED, event, node=self.node)
                except BusError as error:
                    _log.debug("raft.committed_publish_failed", error=str(error))

    # ---- keys, leases and decisions: commands stamped with this leader's clock

    async def _execute(self, command: Stamped) -> Result:
        result = await self._driver().propose(encode_command(command(time.time())))
        assert isinstance(result, Result)
        return result

    async def _catch_up(self) -> None:
        await self._driver().read_barrier()

    # ---- the group

    async def status(self) -> ConsensusStatus:
        node = self._driver().node
        conf = node.conf
        members = []
        for member in sorted(conf.members):
            progress = node.progress(member)
            match = progress.match if progress is not None else None
            if member == self.node and node.leader == self.node:
                match = node.last_index
            members.append(
                ConsensusMember(node=member, voter=member in conf.voters, match_index=match)
            )
        return ConsensusStatus(
            node=self.node,
            backend="raft",
            role=node.role.value,
            term=node.term,
            leader=node.leader,
            commit_index=node.commit_index,
            applied_index=node.applied_index,
            members=members,
            rejected=self.rejected(),
        )

    def rejected(self) -> dict[str, int]:
        """Inbound Raft messages refused, by reason."""
        counts = dict(self._driver().rejected)
        if self._subscription is not None and self._subscription.dropped:
            counts["invalid_batch"] = self._subscription.dropped
        return counts

    async def change_members(self, change: MemberChange) -> ConsensusStatus:
        await self._driver().change_members(ConfChange(_MEMBER_KINDS[change.action], change.node))
        return await self.status()

    async def transfer(self, to: str) -> ConsensusStatus:
        self._driver().transfer(to)
        return await self.status()
