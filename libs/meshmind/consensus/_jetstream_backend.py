"""The ``jetstream`` backend: the hub's JetStream (NATS's own Raft) as the consensus store.

Keys live in the hub bucket ``mesh-consensus``; every write carries the revision it read
(``Nats-Expected-Last-Subject-Sequence``), so a concurrent writer makes it fail and read again
instead of being overwritten. A lease is a value naming its holder and its TTL; it expires at
the hub's time of its write plus the TTL, judged against the hub's time now (read from a clock
write), so every host agrees whatever its own clock says. A lease holds its key: a put, cas or
delete of a key under a live lease is refused. Decisions are a hub stream with one subject per
idempotency key, appended only if that subject is still empty.
"""

from __future__ import annotations

import asyncio
import binascii
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from meshmind.bus import Bus, BusError, HubUnavailable, KeyValue, KvEntry, Stream
from meshmind.bus.protocol import (
    CONSENSUS_BUCKET,
    CONSENSUS_STREAM,
    ConsensusStatus,
    Decision,
    DecisionAck,
    DecisionList,
    DecisionProposal,
    DecisionQuery,
    KvBatchWrite,
    KvCas,
    KvEntryInfo,
    KvWrite,
    LeaseRequest,
    LeaseState,
    MemberChange,
    StoredDecision,
    StoredValue,
)
from meshmind.consensus._backend import BackendName, NotSupported, Unavailable

BUCKET = CONSENSUS_BUCKET.name
STREAM = CONSENSUS_STREAM.name
STREAM_PREFIX = CONSENSUS_STREAM.subject_prefix
CLOCK_KEY = "_clock"
CAS_RETRIES = 16


T = TypeVar("T")


async def _answered(call: Awaitable[T]) -> T:
    """``call``'s result; a hub out of reach is the service's 503."""
    try:
        return await call
    except HubUnavailable as error:
        raise Unavailable(str(error)) from None


def _token(idempotency_key: str) -> str:
    return binascii.hexlify(idempotency_key.encode()).decode()


class JetStreamBackend:
    """The consensus store over the hub's JetStream; ``replicas`` 3 on a 3-server hub."""

    name: BackendName = "jetstream"

    def __init__(self, bus: Bus, *, replicas: int = 1) -> None:
        self._bus = bus
        self._replicas = replicas
        self._kv: KeyValue[StoredValue] | None = None
        self._log: Stream[StoredDecision] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Nothing to do up front: the bucket and stream are bound on first use, so a host
        that starts cut off from the hub still serves its status."""

    async def stop(self) -> None:
        """Nothing to release."""

    async def _bucket(self) -> KeyValue[StoredValue]:
        if self._kv is None:
            async with self._lock:
                if self._kv is None:
                    self._kv = await _answered(
                        self._bus.hub().key_value(BUCKET, StoredValue, replicas=self._replicas)
                    )
        return self._kv

    async def _stream(self) -> Stream[StoredDecision]:
        if self._log is None:
            async with self._lock:
                if self._log is None:
                    self._log = await _answered(
                        self._bus.hub().stream(
                            STREAM, STREAM_PREFIX, StoredDecision, replicas=self._replicas
                        )
                    )
        return self._log

    async def _hub_now(self, kv: KeyValue[StoredValue]) -> float:
        """The hub's clock now: the time it stores a write."""
        await _answered(kv.put(CLOCK_KEY, StoredValue(value="")))
        entry = await _answered(kv.latest(CLOCK_KEY))
        if entry is None or entry.written_at is None:
            raise Unavailable("the hub did not tell its time")
        return entry.written_at

    @staticmethod
    def _live(entry: KvEntry[StoredValue] | None, now: float | None) -> StoredValue | None:
        """The entry's value unless it is absent or an expired lease."""
        if entry is None or entry.value is None:
            return None
        value = entry.value
        expired = (
            value.lease_ttl_s is not None
            and now is not None
            and (entry.written_at or 0.0) + value.lease_ttl_s <= now
        )
        return None if expired else value

    async def _current(
        self, kv: KeyValue[StoredValue], key: str
    ) -> tuple[KvEntry[StoredValue] | None, StoredValue | None]:
        """The key's last entry, and its value unless it is absent or an expired lease."""
        entry = await _answered(kv.latest(key))
        leased = (
            entry is not None and entry.value is not None and entry.value.lease_ttl_s is not None
        )
        now = await self._hub_now(kv) if leased else None
        return entry, self._live(entry, now)

    # ---- keys

    async def get(self, key: str) -> KvEntryInfo:
        entry, value = await self._current(await self._bucket(), key)
        if entry is None or value is None:
            return KvEntryInfo(key=key, value=None, revision=0)
        return KvEntryInfo(
            key=key, value=value.value, revision=entry.revision, lease=value.lease_holder
        )

    async def _write_if(
        self, key: str, value: str, matches: Callable[[int, str | None], bool]
    ) -> KvWrite:
        """Write ``value`` if no lease holds the key and ``matches(revision, value)`` of the key
        as it stands (0 and None: absent)."""
        written, _ = await self._stored_if(key, StoredValue(value=value), matches)
        return written

    async def _stored_if(
        self, key: str, stored: StoredValue, matches: Callable[[int, str | None], bool]
    ) -> tuple[KvWrite, StoredValue | None]:
        """Write ``stored`` as :meth:`_write_if` does; the outcome and the key's stored value
        after it. A concurrent writer that got in first is read again."""
        kv = await self._bucket()
        for _ in range(CAS_RETRIES):
            entry, current = await self._current(kv, key)
            revision = entry.revision if entry is not None and current is not None else 0
            current_value = current.value if current is not None else None
            leased = current is not None and current.lease_holder is not None
            if leased or not matches(revision, current_value):
                return KvWrite(key=key, ok=False, revision=revision, value=current_value), current
            last = entry.revision if entry is not None else 0
            written = await _answered(kv.update(key, stored, last=last))
            if written is not None:
                return KvWrite(key=key, ok=True, revision=written, value=stored.value), stored
        raise Unavailable(f"write of {key}: too many concurrent writers, try again")

    async def put(self, key: str, value: str) -> KvWrite:
        return await self._write_if(key, value, lambda revision, current: True)

    async def cas(self, request: KvCas) -> KvWrite:
        """A revision-checked update; with a log record, the record is kept in the bucket
        beside the value and then appended to the stream. Bucket and stream are two writes:
        a host that stops between them leaves the append to whoever next tries the key with
        the same log key, which finds the record in the bucket and appends it."""
        if request.expected_revision is not None:
            expected_revision = request.expected_revision

            def matches(revision: int, current: str | None) -> bool:
                return revision == expected_revision
        else:
            expected = request.expected

            def matches(revision: int, current: str | None) -> bool:
                return current == expected

        stored = StoredValue(
            value=request.value, log_record=request.log_record, log_key=request.log_key
        )
        written, current = await self._stored_if(request.key, stored, matches)
        if request.log_key is None:
            return written
        if current is not None and current.log_key == request.log_key and current.log_record:
            proposal = DecisionProposal(record=current.log_record, idempotency_key=current.log_key)
            ack = await self.propose(proposal)
            return written.model_copy(update={"seq": ack.seq})
        earlier = await _answered((await self._stream()).last_of(_token(request.log_key)))
        return written.model_copy(update={"seq": earlier.seq if earlier is not None else None})

    async def delete(self, key: str) -> KvWrite:
        kv = await self._bucket()
        for _ in range(CAS_RETRIES):
            entry, current = await self._current(kv, key)
            if entry is None or current is None:
                return KvWrite(key=key, ok=False, revision=0)
            if current.lease_holder is not None:
                return KvWrite(key=key, ok=False, revision=entry.revision, value=current.value)
            if await _answered(kv.delete(key, revision=entry.revision)):
                return KvWrite(key=key, ok=True, revision=0)
        raise Unavailable(f"delete of {key}: too many concurrent writers, try again")

    async def batch(self, writes: Sequence[KvBatchWrite]) -> list[KvWrite]:
        """Each key's writes one after another, the keys' at once."""
        outcomes: list[KvWrite | None] = [None] * len(writes)
        by_key: dict[str, list[int]] = {}
        for index, write in enumerate(writes):
            by_key.setdefault(write.key, []).append(index)

        async def in_turn(indexes: list[int]) -> None:
            for index in indexes:
                outcomes[index] = await self._batch_write(writes[index])

        try:
            async with asyncio.TaskGroup() as group:  # one failure stops the other keys' writes
                for indexes in by_key.values():
                    group.create_task(in_turn(indexes))
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
        answered = [outcome for outcome in outcomes if outcome is not None]
        assert len(answered) == len(writes)
        return answered

    async def _batch_write(self, write: KvBatchWrite) -> KvWrite:
        if write.op == "delete":
            return await self.delete(write.key)
        assert write.value is not None  # the request's validator saw to it
        if write.op == "put":
            return await self.put(write.key, write.value)
        request = KvCas(
            key=write.key,
            value=write.value,
            expected=write.expected,
            expected_revision=write.expected_revision,
        )
        return await self.cas(request)

    # ---- leases

    async def lease(self, request: LeaseRequest) -> LeaseState:
        kv = await self._bucket()
        key, holder = request.key, request.holder
        for _ in range(CAS_RETRIES):
            entry, current = await self._current(kv, key)
            held_by = current.lease_holder if current is not None else None
            last = entry.revision if entry is not None else 0
            if request.action == "grant":
                allowed = current is None or held_by == holder
            else:
                allowed = held_by == holder
            if not allowed:
                expires = self._expiry(entry, current)
                return LeaseState(key=key, ok=False, holder=held_by, expires_at=expires)
            if request.action == "release":
                if await _answered(kv.delete(key, revision=last)):
                    return LeaseState(key=key, ok=True, holder=None)
                continue
            stored = StoredValue(value=holder, lease_holder=holder, lease_ttl_s=request.ttl_s)
            written = await _answered(kv.update(key, stored, last=last))
            if written is not None:
                after = await _answered(kv.latest(key))
                return LeaseState(
                    key=key, ok=True, holder=holder, expires_at=self._expiry(after, stored)
                )
        raise Unavailable(f"lease on {key}: too many concurrent writers, try again")

    @staticmethod
    def _expiry(entry: KvEntry[StoredValue] | None, value: StoredValue | None) -> float | None:
        if entry is None or value is None or value.lease_ttl_s is None:
            return None
        return (entry.written_at or 0.0) + value.lease_ttl_s

    # ---- the decision log

    async def propose(self, request: DecisionProposal) -> DecisionAck:
        log = await self._stream()
        token = _token(request.idempotency_key)
        stored = StoredDecision(record=request.record, idempotency_key=request.idempotency_key)
        seq = await _answered(log.append(token, stored, expected_last_token_seq=0))
        if seq is not None:
            return DecisionAck(seq=seq, duplicate=False)
        first = await _answered(log.last_of(token))
        if first is None:
            raise Unavailable("the decision log refused the append and has no earlier one")
        return DecisionAck(seq=first.seq, duplicate=True)

    async def decisions(self, query: DecisionQuery) -> DecisionList:
        log = await self._stream()
        records = await _answered(log.read(query.after, query.limit))
        last = await _answered(log.last_seq())
        return DecisionList(
            decisions=[
                Decision(
                    seq=r.seq,
                    record=r.value.record,
                    idempotency_key=r.value.idempotency_key,
                    at=r.at,
                )
                for r in records
            ],
            last_seq=last,
        )

    # ---- the group

    async def status(self) -> ConsensusStatus:
        node = self._bus.node_id
        try:
            kv = await self._bucket()
            entry = await kv.latest(CLOCK_KEY)
            applied = entry.revision if entry is not None else 0
            leader: str | None = "hub"
        except (BusError, Unavailable):
            applied, leader = 0, None
        return ConsensusStatus(
            node=node,
            backend="jetstream",
            role="client",
            term=0,
            leader=leader,
            commit_index=applied,
            applied_index=applied,
            members=[],
        )

    async def change_members(self, change: MemberChange) -> ConsensusStatus:
        raise NotSupported("the jetstream backend's members are the hub's servers")

    async def transfer(self, to: str) -> ConsensusStatus:
        raise NotSupported("the jetstream backend's leader is the hub's stream leader")
