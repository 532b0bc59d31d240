"""The replicated state machine: a revisioned key-value store with leases and a decision log.

Pure and deterministic: time is the ``at`` each command carries (the leader's clock when it was
proposed), never the replica's own, so every replica applying the same log reaches the same state.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections import OrderedDict
from typing import Any

import msgpack

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
)
from meshmind.consensus._model import Decision, Lease, Result, Status, VersionedValue

SNAPSHOT_VERSION = 1
DEFAULT_IDEMPOTENCY_KEYS = 10_000


class StoreState:
    """Keys, leases and decisions as of the last applied command.

    A lease holds a key (its value is the holder's name) until ``expires_at``; the first command
    whose time is at or past that expires it, deleting the key. Time never runs backwards: a
    command stamped earlier than one already applied counts as happening at the later time.
    Keys held by a lease can only be changed through lease commands.
    """

    def __init__(self, idempotency_keys: int = DEFAULT_IDEMPOTENCY_KEYS) -> None:
        self._idempotency_limit = idempotency_keys
        self._revision = 0
        self._now = -math.inf
        self._kv: dict[str, VersionedValue] = {}
        self._deadlines: list[tuple[float, str]] = []
        """A heap of (expires_at, key) for every lease given, current or since replaced."""
        self._decisions: list[Decision] = []
        self._idempotency: OrderedDict[str, int] = OrderedDict()

    @property
    def revision(self) -> int:
        """The store's revision: how many writes it has applied."""
        return self._revision

    @property
    def now(self) -> float:
        """The latest command time applied."""
        return self._now

    def get(self, key: str) -> VersionedValue | None:
        """A key as of the last applied command (a lease past its time is still shown until a
        command expires it: call this after a read barrier, as Raft's ReadIndex gives)."""
        return self._kv.get(key)

    def keys(self) -> list[str]:
        """Every key, sorted."""
        return sorted(self._kv)

    def decisions(self, after: int = 0) -> list[Decision]:
        """Decisions with a sequence number above ``after``, in order."""
        return self._decisions[max(after, 0) :]

    def apply_bytes(self, data: bytes) -> Result:
        """Apply an encoded command (from a committed log entry)."""
        return self.apply(decode_command(data))

    def apply(self, command: Command) -> Result:
        """Apply one command: first expire the leases its time has run out, then the command."""
        self._now = max(self._now, command.at)
        expired = self._expire()
        result = self._apply(command)
        return dataclasses.replace(result, expired=expired) if expired else result

    def _apply(self, command: Command) -> Result:
        match command:
            case Put(key=key, value=value):
                return self._write_unleased(key, value)
            case Cas(key=key, value=value, expected=expected, expected_revision=revision):
                return self._cas(key, value, expected, revision)
            case CasAppend(
                key=key,
                value=value,
                expected=expected,
                expected_revision=revision,
                record=record,
                idempotency_key=idempotency_key,
            ):
                written = self._cas(key, value, expected, revision)
                if written.status is not Status.OK:
                    earlier = self._logged(idempotency_key)
                    return Result(written.status, written.revision, written.current, earlier)
                appended = self._append_decision(record, idempotency_key)
                return Result(
                    Status.OK,
                    self._revision,
                    written.current,
                    appended.decision,
                    appended.duplicate,
                )
            case Delete(key=key):
                current = self._kv.get(key)
                if current is None:
                    return self._result(Status.NOT_FOUND)
                if current.lease is not None:
                    return self._result(Status.CONFLICT, current)
                self._remove(key)
                return self._result(Status.OK)
            case LeaseGrant(key=key, holder=holder, ttl=ttl):
                current = self._kv.get(key)
                if current is not None and (
                    current.lease is None or current.lease.holder != holder
                ):
                    return self._result(Status.CONFLICT, current)
                return self._hold(key, holder, ttl)
            case LeaseRenew(key=key, holder=holder, ttl=ttl):
                return self._if_holder(key, holder) or self._hold(key, holder, ttl)
            case LeaseRelease(key=key, holder=holder):
                refused = self._if_holder(key, holder)
                if refused is not None:
                    return refused
                self._remove(key)
                return self._result(Status.OK)
            case AppendDecision(record=record, idempotency_key=idempotency_key):
                return self._append_decision(record, idempotency_key)
            case Tick():
                return self._result(Status.OK)
            case Batch(writes=writes):
                results = tuple(self._apply(write) for write in writes)
                return Result(Status.OK, self._revision, writes=results)

    def _cas(self, key: str, value: bytes, expected: bytes | None, revision: int | None) -> Result:
        current = self._kv.get(key)
        if revision is not None:
            matches = (current.revision if current else 0) == revision
        else:
            matches = (current.value if current else None) == expected
        if not matches:
            return self._result(Status.CONFLICT, current)
        return self._write_unleased(key, value)

    def _result(self, status: Status, current: VersionedValue | None = None) -> Result:
        return Result(status, self._revision, current)

    def _write_unleased(self, key: str, value: bytes) -> Result:
        current = self._kv.get(key)
        if current is not None and current.lease is not None:
            return self._result(Status.CONFLICT, current)
        return self._result(Status.OK, self._write(key, value, lease=None))

    def _write(self, key: str, value: bytes, lease: Lease | None) -> VersionedValue:
        self._revision += 1
        previous = self._kv.get(key)
        created = previous.created_revision if previous else self._revision
        written = VersionedValue(key, value, self._revision, created, lease)
        self._kv[key] = written
        return written

    def _remove(self, key: str) -> None:
        self._revision += 1
        del self._kv[key]

    def _hold(self, key: str, holder: str, ttl: float) -> Result:
        lease = Lease(holder, self._now + ttl)
        heapq.heappush(self._deadlines, (lease.expires_at, key))
        return self._result(Status.OK, self._write(key, holder.encode(), lease))

    def _if_holder(self, key: str, holder: str) -> Result | None:
        """None if ``holder`` holds ``key``; otherwise the result that refuses the command."""
        current = self._kv.get(key)
        if current is None or current.lease is None:
            return self._result(Status.NOT_FOUND, current)
        if current.lease.holder != holder:
            return self._result(Status.CONFLICT, current)
        return None

    def _expire(self) -> tuple[str, ...]:
        """Remove the keys whose lease has run out, earliest first (ties by key); a deadline
        whose lease was renewed, released or replaced meanwhile is dropped."""
        expired = []
        while self._deadlines and self._deadlines[0][0] <= self._now:
            expires_at, key = heapq.heappop(self._deadlines)
            lease = self._kv[key].lease if key in self._kv else None
            if lease is not None and lease.expires_at == expires_at:
                self._remove(key)
                expired.append(key)
        return tuple(expired)

    def _logged(self, idempotency_key: str) -> Decision | None:
        """The decision appended under ``idempotency_key``, while the key is remembered."""
        seq = self._idempotency.get(idempotency_key)
        return self._decisions[seq - 1] if seq is not None else None

    def _append_decision(self, record: bytes, idempotency_key: str) -> Result:
        earlier = self._logged(idempotency_key)
        if earlier is not None:
            return Result(Status.OK, self._revision, decision=earlier, duplicate=True)
        decision = Decision(len(self._decisions) + 1, record, idempotency_key, self._now)
        self._decisions.append(decision)
        self._idempotency[idempotency_key] = decision.seq
        while len(self._idempotency) > self._idempotency_limit:
            self._idempotency.popitem(last=False)
        return Result(Status.OK, self._revision, decision=decision)

    def snapshot(self) -> bytes:
        """The whole state, deterministically encoded."""
        state = {
            "v": SNAPSHOT_VERSION,
            "revision": self._revision,
            "now": self._now if math.isfinite(self._now) else None,
            "kv": [
                [
                    kv.key,
                    kv.value,
                    kv.revision,
                    kv.created_revision,
                    kv.lease.holder if kv.lease else None,
                    kv.lease.expires_at if kv.lease else None,
                ]
                for kv in sorted(self._kv.values(), key=lambda kv: kv.key)
            ],
            "decisions": [[d.record, d.idempotency_key, d.at] for d in self._decisions],
            "idempotency": list(self._idempotency.items()),
        }
        packed: bytes = msgpack.packb(state, use_bin_type=True)
        return packed

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's."""
        state: Any = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if not isinstance(state, dict) or state.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"not a store snapshot of version {SNAPSHOT_VERSION}")
        self._revision = state["revision"]
        self._now = -math.inf if state["now"] is None else state["now"]
        self._kv = {}
        self._deadlines = []
        for key, value, revision, created, holder, expires_at in state["kv"]:
            lease = None if holder is None else Lease(holder, expires_at)
            self._kv[key] = VersionedValue(key, value, revision, created, lease)
            if lease is not None:
                self._deadlines.append((expires_at, key))
        heapq.heapify(self._deadlines)
        self._decisions = [
            Decision(seq, record, idempotency_key, at)
            for seq, (record, idempotency_key, at) in enumerate(state["decisions"], start=1)
        ]
        self._idempotency = OrderedDict((key, seq) for key, seq in state["idempotency"])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StoreState):
            return NotImplemented
        return self.snapshot() == other.snapshot()

    __hash__ = None  # type: ignore[assignment]
