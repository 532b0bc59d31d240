"""Backend calls on keys, leases and decisions, answered by applying commands to a StoreState."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from meshmind.bus.protocol import (
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
)
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
    Write,
)
from meshmind.consensus._model import Result, VersionedValue
from meshmind.consensus._state import StoreState

Stamped = Callable[[float], Command]
"""A command, given the time it is ordered at."""


def _lease_command(request: LeaseRequest) -> Stamped:
    key, holder, ttl = request.key, request.holder, request.ttl_s
    if request.action == "grant":
        return lambda at: LeaseGrant(key, holder, ttl, at)
    if request.action == "renew":
        return lambda at: LeaseRenew(key, holder, ttl, at)
    return lambda at: LeaseRelease(key, holder, at)


def _batch_write(write: KvBatchWrite, at: float) -> Write:
    if write.op == "delete":
        return Delete(write.key, at)
    assert write.value is not None  # the request's validator saw to it
    value = write.value.encode()
    if write.op == "put":
        return Put(write.key, value, at)
    expected = write.expected.encode() if write.expected is not None else None
    return Cas(write.key, value, at, expected, write.expected_revision)


def _text(value: VersionedValue | None) -> str | None:
    return value.value.decode() if value is not None else None


def _write(key: str, result: Result) -> KvWrite:
    current = result.current
    revision = current.revision if current is not None else 0
    seq = result.decision.seq if result.decision is not None else None
    return KvWrite(key=key, ok=result.ok, revision=revision, value=_text(current), seq=seq)


class StateBackend(ABC):
    """Keys, leases and decisions of a :class:`StoreState`; subclasses order the commands
    (``_execute``) and say when the state is current enough to read (``_catch_up``)."""

    def __init__(self, state: StoreState) -> None:
        self.state = state

    @abstractmethod
    async def _execute(self, command: Stamped) -> Result:
        """Apply ``command``, stamped with the time it is ordered at; what it did."""

    @abstractmethod
    async def _catch_up(self) -> None:
        """Wait until the state holds every command ordered before this call began."""

    async def get(self, key: str) -> KvEntryInfo:
        await self._catch_up()
        current = self.state.get(key)
        if current is None:
            return KvEntryInfo(key=key, value=None, revision=0)
        holder = current.lease.holder if current.lease is not None else None
        return KvEntryInfo(key=key, value=_text(current), revision=current.revision, lease=holder)

    async def put(self, key: str, value: str) -> KvWrite:
        return _write(key, await self._execute(lambda at: Put(key, value.encode(), at)))

    async def cas(self, request: KvCas) -> KvWrite:
        key, value = request.key, request.value.encode()
        expected = request.expected.encode() if request.expected is not None else None
        revision = request.expected_revision
        record, log_key = request.log_record, request.log_key
        if record is None or log_key is None:
            result = await self._execute(lambda at: Cas(key, value, at, expected, revision))
        else:
            logged = record.encode()
            result = await self._execute(
                lambda at: CasAppend(key, value, at, logged, log_key, expected, revision)
            )
        return _write(key, result)

    async def delete(self, key: str) -> KvWrite:
        return _write(key, await self._execute(lambda at: Delete(key, at)))

    async def batch(self, writes: Sequence[KvBatchWrite]) -> list[KvWrite]:
        result = await self._execute(
            lambda at: Batch(tuple(_batch_write(write, at) for write in writes), at)
        )
        return [_write(w.key, r) for w, r in zip(writes, result.writes, strict=True)]

    async def lease(self, request: LeaseRequest) -> LeaseState:
        result = await self._execute(_lease_command(request))
        lease = result.current.lease if result.current is not None else None
        return LeaseState(
            key=request.key,
            ok=result.ok,
            holder=lease.holder if lease is not None else None,
            expires_at=lease.expires_at if lease is not None else None,
        )

    async def propose(self, request: DecisionProposal) -> DecisionAck:
        record, idempotency_key = request.record.encode(), request.idempotency_key
        result = await self._execute(lambda at: AppendDecision(record, idempotency_key, at))
        assert result.decision is not None  # an append always answers with its decision
        return DecisionAck(seq=result.decision.seq, duplicate=result.duplicate)

    async def decisions(self, query: DecisionQuery) -> DecisionList:
        await self._catch_up()
        log = self.state.decisions()
        return DecisionList(
            decisions=[
                Decision(
                    seq=d.seq, record=d.record.decode(), idempotency_key=d.idempotency_key, at=d.at
                )
                for d in log[query.after : query.after + query.limit]
            ],
            last_seq=len(log),
        )
