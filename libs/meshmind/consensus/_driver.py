"""Runs a Raft node: ticks, persists each batch, sends per peer, applies, resolves waiters."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from meshmind.bus import get_logger
from meshmind.consensus._wire import WireError, decode_message, encode_message
from meshmind.raft import (
    ConfChange,
    Entry,
    EntryKind,
    HardState,
    Message,
    NotLeader,
    RaftConfig,
    RaftError,
    RaftNode,
    Ready,
    Recovered,
    Role,
    Snapshot,
)

_log = get_logger(__name__)

Send = Callable[[str, list[bytes]], Awaitable[None]]
"""Sends a batch of encoded Raft messages to one peer."""


class Storage(Protocol):
    """Durable Raft state (``meshmind.raft.DiskStorage``): what was recovered, one save per
    batch (synced unless it only moves the commit index), compaction, and closing."""

    @property
    def recovered(self) -> Recovered: ...

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
        *,
        sync: bool = True,
    ) -> None: ...

    def compact(self, snapshot: Snapshot) -> None: ...

    def close(self) -> None: ...


class StateMachine(Protocol):
    """The replicated state (``StoreState``): applies committed commands in order, snapshots
    and restores."""

    def apply_bytes(self, data: bytes) -> Any: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


class ProposalLost(RaftError):
    """The proposal's entry was replaced by another leader's: it was not applied."""


class StorageFailed(RaftError):
    """The Raft log could not be written. The node's memory is ahead of its disk, so it stops
    for good: restart the service to recover from what is durable."""


@dataclass(frozen=True)
class DriverSettings:
    """Timing and limits of a driver."""

    tick_s: float = 0.1
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    snapshot_every: int = 1000
    """Snapshot the state machine and compact the log once this many entries were applied,
    and they take at least as many bytes as the last snapshot: however large the state, a
    snapshot then costs a bounded share of what was logged (LogCabin's rule)."""
    max_batch_messages: int = 256
    """Most Raft messages in one NATS message."""


@dataclass
class _Waiter:
    term: int
    future: asyncio.Future[Any]


class RaftDriver:
    """Owns a :class:`RaftNode`, its storage and its state machine; one task does everything
    that touches the node, so inputs (messages, proposals, reads) are queued to it."""

    def __init__(
        self,
        node_id: str,
        voters: frozenset[str],
        storage: Storage,
        state: StateMachine,
        send: Send,
        settings: DriverSettings | None = None,
        *,
        learners: frozenset[str] = frozenset(),
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings or DriverSettings()
        self.id = node_id
        self._storage = storage
        self._state = state
        self._send = send
        recovered = storage.recovered
        self._snapshot_bytes = 0
        if recovered.snapshot is not None:
            state.restore(recovered.snapshot.data)
            self._snapshot_bytes = len(recovered.snapshot.data)
        config = RaftConfig(
            id=node_id,
            voters=voters,
            learners=learners,
            rng=rng or random.Random(),
            election_tick=self.settings.election_ticks,
            heartbeat_tick=self.settings.heartbeat_ticks,
        )
        self.node = RaftNode(config, restored=recovered)
        self._since_snapshot = 0
        self._logged_since_snapshot = 0
        self._inbox: deque[Message] = deque()
        self._wake = asyncio.Event()
        self._proposals: dict[int, _Waiter] = {}
        self._read_ids = itertools.count(1)
        self._reads: dict[int, asyncio.Future[int]] = {}
        self._ready_reads: list[tuple[int, asyncio.Future[int]]] = []
        self._applied_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.rejected: Counter[str] = Counter()
        """Inbound Raft messages refused, by reason."""
        self.on_applied: Callable[[Entry, Any], None] | None = None
        self._storage_work: asyncio.Future[None] | None = None
        self.storage_failure: StorageFailed | None = None

    # ---- inputs (any task)

    def receive(self, sender: str, frames: list[bytes]) -> None:
        """Queue the messages ``sender`` sent us; refuse (and count) any that are malformed,
        claim another sender, or are addressed to another node."""
        for frame in frames:
            try:
                message = decode_message(frame)
            except WireError as error:
                self.rejected["malformed"] += 1
                _log.warning("raft.rejected", sender=sender, reason=str(error))
                continue
            if message.sender != sender:
                self.rejected["impersonation"] += 1
                _log.warning("raft.rejected", sender=sender, claimed=message.sender)
                continue
            if message.recipient != self.id:
                self.rejected["misaddressed"] += 1
                continue
            self._inbox.append(message)
        self._wake.set()

    async def propose(self, data: bytes) -> Any:
        """Append ``data`` to the log and wait for it to be applied; the state machine's result.

        Raises :class:`NotLeader`, :class:`ProposalRefused`, :class:`ProposalLost` or
        :class:`StorageFailed`."""
        self._check_storage()
        index = self.node.propose(data)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._proposals[index] = _Waiter(self.node.term, future)
        self._wake.set()
        return await future

    async def change_members(self, change: ConfChange) -> None:
        """Propose one membership change and wait until it is applied."""
        self._check_storage()
        index = self.node.propose_conf_change(change)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._proposals[index] = _Waiter(self.node.term, future)
        self._wake.set()
        await future

    async def read_barrier(self) -> None:
        """Wait until this node may serve a linearizable read: a quorum confirmed it leads, and
        it applied everything committed when the read began (ReadIndex)."""
        self._check_storage()
        request_id = next(self._read_ids)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.node.read_index(request_id)
        self._reads[request_id] = future
        self._wake.set()
        try:
            index = await future
        finally:
            self._reads.pop(request_id, None)
        await self.wait_applied(index)

    async def wait_applied(self, index: int) -> None:
        """Wait until the state machine applied ``index``."""
        if self.node.applied_index >= index:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._applied_waiters.append((index, future))
        await future

    def forget_leader(self) -> None:
        """Forget the leader a failure detector says is gone (see ``RaftNode.forget_leader``)."""
        self.node.forget_leader()
        self._wake.set()

    def campaign(self) -> None:
        """Stand for election now."""
        self.node.campaign()
        self._wake.set()

    def transfer(self, to: str) -> None:
        """Start handing leadership to ``to``."""
        self.node.transfer_leadership(to)
        self._wake.set()

    @property
    def is_leader(self) -> bool:
        """Whether this node leads now."""
        return self.node.role is Role.LEADER

    # ---- the loop

    async def run(self) -> None:
        """Tick, step, persist, send, apply; until cancelled, or until storage fails
        (:class:`StorageFailed`, raised again by every later run)."""
        self._check_storage()
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.settings.tick_s
        while True:
            timeout = max(0.0, next_tick - loop.time())
            if not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):  # wait_for can swallow a cancel (3.11)
                        await self._wake.wait()
            self._wake.clear()
            if loop.time() >= next_tick:
                self.node.tick()
                next_tick = max(next_tick + self.settings.tick_s, loop.time())
            while self._inbox:
                self._step(self._inbox.popleft())
            while (ready := self.node.ready()) is not None:
                await self._handle(ready)
                while self._inbox:
                    self._step(self._inbox.popleft())

    async def _store(self, work: Callable[[], None], *, in_thread: bool = True) -> None:
        """Run storage work (in a thread unless told otherwise); if the loop is cancelled
        meanwhile, the work still finishes, and :meth:`close` waits for it. A failure stops
        the node for good (:class:`StorageFailed`)."""
        try:
            if not in_thread:
                work()
                return
            self._storage_work = asyncio.ensure_future(asyncio.to_thread(work))
            await asyncio.shield(self._storage_work)
        except OSError as error:
            raise self._stop_for_storage(error) from error

    def _check_storage(self) -> None:
        if self.storage_failure is not None:
            raise self.storage_failure

    def _stop_for_storage(self, error: OSError) -> StorageFailed:
        failure = StorageFailed(f"{self.id} could not write its Raft log: {error}")
        self.storage_failure = failure
        _log.error("raft.storage_failed", error=str(error))
        pending: list[asyncio.Future[Any]] = [w.future for w in self._proposals.values()]
        pending += self._reads.values()
        pending += [future for _, future in self._applied_waiters]
        for future in pending:
            if not future.done():
                future.set_exception(failure)
        self._proposals.clear()
        self._reads.clear()
        self._applied_waiters = []
        return failure

    async def close(self) -> None:
        """Once :meth:`run` is stopped: let storage work in flight finish, then close it."""
        if self._storage_work is not None:
            with contextlib.suppress(Exception):
                await self._storage_work
        await asyncio.to_thread(self._storage.close)

    def _step(self, message: Message) -> None:
        try:
            self.node.step(message)
        except (ValueError, RaftError) as error:
            self.rejected["refused"] += 1
            _log.warning("raft.step_refused", sender=message.sender, reason=str(error))

    async def _handle(self, ready: Ready) -> None:
        if ready.send_before_sync:
            await self._send_all(ready.messages)
        if ready.must_sync:
            await self._store(
                lambda: self._storage.save(ready.hard_state, ready.entries, ready.snapshot)
            )
        elif ready.hard_state is not None:
            hard_state = ready.hard_state
            await self._store(
                lambda: self._storage.save(hard_state, [], sync=False), in_thread=False
            )
        if not ready.send_before_sync:
            await self._send_all(ready.messages)
        if ready.snapshot is not None:
            self._state.restore(ready.snapshot.data)
            self._snapshot_bytes = len(ready.snapshot.data)
            self._fail_proposals_upto(ready.snapshot.meta.index)
        for entry in ready.committed:
            self._apply(entry)
        for read in ready.read_states:
            future = self._reads.get(read.request_id)
            if future is not None and not future.done():
                future.set_result(read.index)
        self.node.advance(ready)
        self._release_applied()
        self._fail_stale_reads()
        if (
            self._since_snapshot >= self.settings.snapshot_every
            and self._logged_since_snapshot >= self._snapshot_bytes
        ):
            await self._snapshot()

    async def _send_all(self, messages: list[Message]) -> None:
        by_peer: dict[str, list[bytes]] = defaultdict(list)
        for message in messages:
            by_peer[message.recipient].append(encode_message(message))
        size = self.settings.max_batch_messages
        for peer, frames in by_peer.items():
            for start in range(0, len(frames), size):
                try:
                    await self._send(peer, frames[start : start + size])
                except Exception as error:  # Raft resends what is lost; never stop the loop
                    _log.debug("raft.send_failed", peer=peer, error=repr(error))

    def _apply(self, entry: Entry) -> None:
        result: Any = None
        if entry.kind is EntryKind.NORMAL:
            try:
                result = self._state.apply_bytes(entry.data)
            except Exception as error:  # a command every replica refuses the same way
                _log.exception("raft.apply_failed", index=entry.index)
                result = error
        self._since_snapshot += 1
        self._logged_since_snapshot += len(entry.data)
        if self.on_applied is not None:
            try:
                self.on_applied(entry, result)
            except Exception:  # the entry is applied: stopping here would apply it twice
                _log.exception("raft.on_applied_failed", index=entry.index)
        waiter = self._proposals.pop(entry.index, None)
        if waiter is None or waiter.future.done():
            return
        if waiter.term != entry.term:
            waiter.future.set_exception(
                ProposalLost(f"entry {entry.index} was replaced by another leader's")
            )
        elif isinstance(result, Exception):
            waiter.future.set_exception(result)
        else:
            waiter.future.set_result(result)

    def _fail_proposals_upto(self, index: int) -> None:
        for waiting in [i for i in self._proposals if i <= index]:
            waiter = self._proposals.pop(waiting)
            if not waiter.future.done():
                waiter.future.set_exception(
                    ProposalLost(f"entry {waiting} was covered by a snapshot; outcome unknown")
                )

    def _release_applied(self) -> None:
        applied = self.node.applied_index
        still: list[tuple[int, asyncio.Future[None]]] = []
        for index, future in self._applied_waiters:
            if index <= applied:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((index, future))
        self._applied_waiters = still

    def _fail_stale_reads(self) -> None:
        if self.node.role is Role.LEADER:
            return
        for request_id, future in list(self._reads.items()):
            if not future.done():
                future.set_exception(NotLeader(self.node.leader))
            self._reads.pop(request_id, None)

    async def _snapshot(self) -> None:
        applied = self.node.applied_index
        data = self._state.snapshot()
        snapshot = self.node.compact(applied, data)
        await self._store(lambda: self._storage.compact(snapshot))
        self._since_snapshot = self._logged_since_snapshot = 0
        self._snapshot_bytes = len(data)
        _log.info("raft.snapshot", index=applied, bytes=len(data))
