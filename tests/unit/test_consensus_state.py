"""The replicated store's state machine: cas, leases by command time, decisions, snapshots."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshmind.bus.protocol import (
    DecisionProposal,
    DecisionQuery,
    KvBatchWrite,
    KvCas,
    KvWrite,
    LeaseAction,
    LeaseRequest,
)
from meshmind.consensus._backend import ConsensusBackend, NotSupported
from meshmind.consensus._batch_reply import batch_reply
from meshmind.consensus._commands import (
    AppendDecision,
    BadCommand,
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
from meshmind.consensus._local import LocalStore
from meshmind.consensus._model import Lease, Status, VersionedValue
from meshmind.consensus._state import StoreState


def applied(*commands: Command) -> StoreState:
    state = StoreState()
    for command in commands:
        state.apply(command)
    return state


def test_every_write_takes_the_next_global_revision() -> None:
    state = StoreState()
    assert state.apply(Put("a", b"1", at=0)).current is not None
    state.apply(Put("b", b"1", at=0))
    result = state.apply(Put("a", b"2", at=0))
    assert result.ok
    assert result.revision == 3
    current = state.get("a")
    assert current is not None
    assert (current.value, current.revision, current.created_revision) == (b"2", 3, 1)
    assert state.apply(Delete("b", at=0)).revision == 4
    assert state.get("b") is None
    assert state.apply(Delete("b", at=0)).status is Status.NOT_FOUND
    assert state.revision == 4  # a delete of nothing writes nothing


def test_cas_on_value() -> None:
    state = applied(Put("k", b"old", at=0))
    conflict = state.apply(Cas("k", b"new", at=0, expected=b"other"))
    assert conflict.status is Status.CONFLICT
    assert conflict.current is not None
    assert (conflict.current.value, conflict.current.revision) == (b"old", 1)
    assert state.apply(Cas("k", b"new", at=0, expected=b"old")).ok
    assert state.apply(Cas("k", b"newer", at=0, expected=b"old")).status is Status.CONFLICT
    current = state.get("k")
    assert current is not None
    assert current.value == b"new"


def test_cas_expecting_absence_creates_once() -> None:
    state = StoreState()
    assert state.apply(Cas("k", b"mine", at=0, expected=None)).ok
    refused = state.apply(Cas("k", b"yours", at=0, expected=None))
    assert refused.status is Status.CONFLICT
    assert refused.current is not None
    assert refused.current.value == b"mine"


def test_cas_on_revision() -> None:
    state = StoreState()
    assert state.apply(Cas("k", b"v1", at=0, expected_revision=0)).ok  # 0: must not exist
    assert state.apply(Cas("k", b"v1", at=0, expected_revision=0)).status is Status.CONFLICT
    state.apply(Put("other", b"x", at=0))
    assert state.apply(Cas("k", b"v2", at=0, expected_revision=1)).ok
    stale = state.apply(Cas("k", b"v3", at=0, expected_revision=1))  # k was rewritten at 3
    assert stale.status is Status.CONFLICT
    assert stale.current is not None
    assert stale.current.revision == 3


def test_a_lease_holds_a_key_for_its_holder_until_command_time_passes_it() -> None:
    state = StoreState()
    granted = state.apply(LeaseGrant("coordinator", "n1", ttl=10, at=100))
    assert granted.ok
    assert granted.current is not None
    assert granted.current.value == b"n1"
    assert granted.current.lease == Lease("n1", 110)
    assert state.apply(LeaseGrant("coordinator", "n2", ttl=10, at=109.9)).status is Status.CONFLICT
    taken = state.apply(LeaseGrant("coordinator", "n2", ttl=10, at=110))  # at expiry: expired
    assert taken.ok
    assert taken.expired == ("coordinator",)
    assert taken.current is not None
    assert taken.current.lease == Lease("n2", 120)


def test_lease_expiry_follows_command_time_not_the_replica_clock() -> None:
    state = applied(LeaseGrant("k", "n1", ttl=5, at=1_000))
    # However long this replica waits, nothing expires until a command's time says so.
    assert state.get("k") is not None
    assert state.apply(Tick(at=1_004.999)).expired == ()
    assert state.get("k") is not None
    tick = state.apply(Tick(at=1_005))
    assert tick.expired == ("k",)
    assert state.get("k") is None


def test_command_time_never_runs_backwards() -> None:
    state = applied(LeaseGrant("k", "n1", ttl=5, at=100), Tick(at=200))
    assert state.get("k") is None
    late = state.apply(LeaseGrant("k", "n2", ttl=5, at=50))  # a new leader's clock is behind
    assert late.current is not None
    assert late.current.lease == Lease("n2", 205)


def test_renew_by_the_holder_only() -> None:
    state = applied(LeaseGrant("k", "n1", ttl=10, at=0))
    assert state.apply(LeaseRenew("k", "n2", ttl=10, at=5)).status is Status.CONFLICT
    renewed = state.apply(LeaseRenew("k", "n1", ttl=10, at=5))
    assert renewed.current is not None
    assert renewed.current.lease == Lease("n1", 15)
    assert state.apply(Tick(at=12)).expired == ()
    assert state.apply(LeaseRenew("absent", "n1", ttl=10, at=13)).status is Status.NOT_FOUND
    state.apply(Tick(at=15))
    assert state.apply(LeaseRenew("k", "n1", ttl=10, at=15)).status is Status.NOT_FOUND


def test_release_by_the_holder_only_frees_the_key() -> None:
    state = applied(LeaseGrant("k", "n1", ttl=10, at=0))
    assert state.apply(LeaseRelease("k", "n2", at=1)).status is Status.CONFLICT
    assert state.get("k") is not None
    assert state.apply(LeaseRelease("k", "n1", at=1)).ok
    assert state.get("k") is None
    assert state.apply(LeaseRelease("k", "n1", at=1)).status is Status.NOT_FOUND
    assert state.apply(LeaseGrant("k", "n2", ttl=10, at=2)).ok


def test_a_leased_key_is_changed_only_through_its_lease() -> None:
    state = applied(LeaseGrant("k", "n1", ttl=10, at=0), Put("plain", b"x", at=0))
    assert state.apply(Put("k", b"x", at=1)).status is Status.CONFLICT
    assert state.apply(Delete("k", at=1)).status is Status.CONFLICT
    assert state.apply(Cas("k", b"x", at=1, expected=b"n1")).status is Status.CONFLICT
    assert state.apply(LeaseGrant("plain", "n1", ttl=10, at=1)).status is Status.CONFLICT
    assert state.apply(LeaseRenew("plain", "n1", ttl=10, at=1)).status is Status.NOT_FOUND


def test_a_retried_decision_is_appended_once() -> None:
    state = StoreState()
    first = state.apply(AppendDecision(b"evict n3", "anomaly-7", at=10))
    second = state.apply(AppendDecision(b"restart n2", "anomaly-8", at=11))
    retry = state.apply(AppendDecision(b"evict n3", "anomaly-7", at=12))
    assert first.decision is not None
    assert second.decision is not None
    assert (first.decision.seq, second.decision.seq) == (1, 2)
    assert retry.duplicate
    assert retry.decision == first.decision
    assert [d.record for d in state.decisions()] == [b"evict n3", b"restart n2"]
    assert [d.seq for d in state.decisions(after=1)] == [2]
    assert state.decisions(after=2) == []


def test_idempotency_keys_are_remembered_up_to_a_bound() -> None:
    state = StoreState(idempotency_keys=3)
    for n in range(5):
        state.apply(AppendDecision(b"r", f"key{n}", at=n))
    assert state.apply(AppendDecision(b"r", "key4", at=9)).duplicate
    assert not state.apply(AppendDecision(b"r", "key0", at=9)).duplicate  # forgotten
    assert len(state.decisions()) == 6


def test_a_cas_with_a_log_record_writes_both_or_neither() -> None:
    state = StoreState()
    won = state.apply(
        CasAppend("anomaly/a", b"n1 heals", at=1, record=b"n1 heals", idempotency_key="a")
    )
    lost = state.apply(
        CasAppend("anomaly/a", b"n2 heals", at=2, record=b"n2 heals", idempotency_key="a")
    )
    assert won.ok
    assert won.decision is not None
    assert won.decision.seq == 1
    assert lost.status is Status.CONFLICT
    assert lost.current is not None
    assert lost.current.value == b"n1 heals"
    assert lost.decision == won.decision  # the loser learns where the winner's entry is
    assert [d.record for d in state.decisions()] == [b"n1 heals"]
    leased = applied(LeaseGrant("held", "n1", ttl=10, at=0))
    refused = leased.apply(CasAppend("held", b"v", at=1, record=b"r", idempotency_key="h"))
    assert refused.status is Status.CONFLICT
    assert refused.decision is None
    assert leased.decisions() == []


def test_a_cas_with_a_log_record_reuses_an_earlier_entry_under_its_key() -> None:
    state = applied(AppendDecision(b"first", "k", at=0))
    written = state.apply(CasAppend("x", b"v", at=1, record=b"second", idempotency_key="k"))
    assert written.ok
    assert written.duplicate
    assert [d.record for d in state.decisions()] == [b"first"]


def busy_state() -> StoreState:
    return applied(
        Put("a", b"1", at=1),
        Cas("b", b"2", at=2, expected=None),
        LeaseGrant("lock", "n1", ttl=30, at=3),
        LeaseGrant("gone", "n2", ttl=1, at=3),
        AppendDecision(b"d1", "i1", at=4),
        AppendDecision(b"d2", "i2", at=5),
        Tick(at=6),
    )


def test_a_batch_applies_its_writes_in_order_each_with_its_own_result() -> None:
    state = applied(LeaseGrant("held", "n1", ttl=10, at=0))
    result = state.apply(
        Batch(
            (
                Put("a", b"1", at=1),
                Cas("a", b"2", at=1, expected=b"1"),  # sees the put before it
                Cas("a", b"3", at=1, expected=b"1"),
                Put("held", b"x", at=1),
                Delete("a", at=1),
                Delete("a", at=1),
            ),
            at=1,
        )
    )
    assert result.ok
    assert [(r.status, r.revision) for r in result.writes] == [
        (Status.OK, 2),
        (Status.OK, 3),
        (Status.CONFLICT, 3),
        (Status.CONFLICT, 3),
        (Status.OK, 4),
        (Status.NOT_FOUND, 4),
    ]
    assert [r.current.value if r.current else None for r in result.writes[:4]] == [
        b"1",
        b"2",
        b"2",
        b"n1",
    ]
    assert state.revision == result.revision == 4
    assert state.get("a") is None


def test_a_batch_expires_leases_before_its_writes() -> None:
    state = applied(LeaseGrant("role", "n1", ttl=1, at=0))
    result = state.apply(Batch((Put("role", b"free", at=5),), at=5))
    assert result.expired == ("role",)
    assert result.writes[0].ok


def test_snapshot_round_trip() -> None:
    original = busy_state()
    restored = StoreState()
    restored.restore(original.snapshot())
    assert restored == original
    assert restored.snapshot() == original.snapshot()
    assert restored.get("lock") == original.get("lock")
    assert restored.decisions() == original.decisions()
    assert (restored.revision, restored.now) == (original.revision, original.now)
    # and they go on alike: the restored copy remembers idempotency keys and lease times
    for state in (original, restored):
        assert state.apply(AppendDecision(b"d1", "i1", at=7)).duplicate
        assert state.apply(Tick(at=33)).expired == ("lock",)
    assert restored == original


def test_restore_refuses_what_is_not_a_snapshot() -> None:
    with pytest.raises(ValueError, match="not a store snapshot"):
        StoreState().restore(msgpack.packb({"v": 99}))


def test_commands_round_trip_through_their_encoding() -> None:
    for command in (
        Put("k", b"\x00v", at=1.5),
        Cas("k", b"v", at=2, expected=b"o"),
        Cas("k", b"v", at=2, expected_revision=7),
        CasAppend("k", b"v", at=2, record=b"r", idempotency_key="id", expected_revision=0),
        Delete("k", at=3),
        LeaseGrant("k", "n1", ttl=2.5, at=4),
        LeaseRenew("k", "n1", ttl=2.5, at=5),
        LeaseRelease("k", "n1", at=6),
        AppendDecision(b"rec", "id", at=7),
        Tick(at=8),
        Batch((Put("a", b"1", at=9), Cas("b", b"2", at=9, expected=None), Delete("a", at=9)), 9),
        Batch((), at=10),
    ):
        assert decode_command(encode_command(command)) == command


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({"v": 2, "op": "tick", "at": 1}),
        msgpack.packb({"v": 1, "op": "explode", "at": 1}),
        msgpack.packb({"v": 1, "op": "put", "key": "k", "at": 1}),
        msgpack.packb({"v": 1, "op": "put", "key": 5, "value": b"", "at": 1}),
        msgpack.packb({"v": 1, "op": "tick", "at": True}),
        msgpack.packb({"v": 1, "op": "tick", "at": 1, "holder": "n1"}),
        msgpack.packb({"v": 1, "op": ["put"], "key": "k", "value": b"", "at": 1}),
        msgpack.packb({"v": 1, "op": "batch", "at": 1, "writes": [{"op": {}, "at": 1}]}),
        msgpack.packb({"v": 1, "op": "batch", "at": 1}),
        msgpack.packb({"v": 1, "op": "batch", "at": 1, "writes": [1]}),
        msgpack.packb({"v": 1, "op": "batch", "at": 1, "writes": [], "key": "k"}),
        msgpack.packb({"v": 1, "op": "batch", "writes": []}),
        msgpack.packb(
            {"v": 1, "op": "batch", "at": 1, "writes": [{"op": "tick", "at": 1}]}
        ),  # only puts, cases and deletes
        msgpack.packb(
            {"v": 1, "op": "batch", "at": 1, "writes": [{"op": "batch", "at": 1, "writes": []}]}
        ),
        msgpack.packb(
            {"v": 1, "op": "batch", "at": 1, "writes": [{"op": "put", "key": "k", "at": 1}]}
        ),
    ],
)
def test_bad_commands_are_refused(data: bytes) -> None:
    with pytest.raises(BadCommand):
        decode_command(data)
    with pytest.raises(BadCommand):
        StoreState().apply_bytes(data)


# Two replicas applying one log end equal, one of them restarted from a snapshot midway.

KEYS = st.sampled_from(["a", "b", "lock"])
VALUES = st.sampled_from([b"x", b"y", b"n1", b"n2"])
HOLDERS = st.sampled_from(["n1", "n2"])
TIMES = st.floats(0, 100, allow_nan=False)
TTLS = st.floats(0.5, 20, allow_nan=False)
COMMANDS = st.one_of(
    st.builds(Put, KEYS, VALUES, TIMES),
    st.builds(Cas, KEYS, VALUES, TIMES, st.none() | VALUES),
    st.builds(Cas, KEYS, VALUES, TIMES, st.none(), st.integers(0, 8)),
    st.builds(
        CasAppend, KEYS, VALUES, TIMES, VALUES, st.sampled_from(["i1", "i5"]), st.none() | VALUES
    ),
    st.builds(Delete, KEYS, TIMES),
    st.builds(LeaseGrant, KEYS, HOLDERS, TTLS, TIMES),
    st.builds(LeaseRenew, KEYS, HOLDERS, TTLS, TIMES),
    st.builds(LeaseRelease, KEYS, HOLDERS, TIMES),
    st.builds(AppendDecision, VALUES, st.sampled_from(["i1", "i2", "i3", "i4"]), TIMES),
    st.builds(Tick, TIMES),
)
WRITES = st.one_of(
    st.builds(Put, KEYS, VALUES, TIMES),
    st.builds(Cas, KEYS, VALUES, TIMES, st.none() | VALUES),
    st.builds(Delete, KEYS, TIMES),
)
COMMANDS_AND_BATCHES = COMMANDS | st.builds(Batch, st.lists(WRITES, max_size=4).map(tuple), TIMES)


@settings(max_examples=300, deadline=None)
@given(log=st.lists(COMMANDS_AND_BATCHES, max_size=60), cut=st.integers(0, 60))
def test_replicas_applying_one_log_end_equal(log: list[Command], cut: int) -> None:
    steady = StoreState(idempotency_keys=3)
    restarted = StoreState(idempotency_keys=3)
    cut = min(cut, len(log))
    entries = [encode_command(command) for command in log]
    for entry in entries[:cut]:
        steady.apply_bytes(entry)
        restarted.apply_bytes(entry)
    fresh = StoreState(idempotency_keys=3)
    fresh.restore(restarted.snapshot())
    for entry in entries[cut:]:
        assert fresh.apply_bytes(entry) == steady.apply_bytes(entry)
    assert fresh == steady
    assert [fresh.get(key) for key in ("a", "b", "lock")] == [
        steady.get(key) for key in ("a", "b", "lock")
    ]
    assert fresh.decisions() == steady.decisions()


class ScanningState(StoreState):
    """The reference for lease expiry: every applied command scans every key's lease."""

    def _expire(self) -> tuple[str, ...]:
        expired = sorted(
            (value.lease.expires_at, key)
            for key, value in self._kv.items()
            if value.lease is not None and value.lease.expires_at <= self._now
        )
        for _, key in expired:
            self._remove(key)
        return tuple(key for _, key in expired)


@settings(max_examples=300, deadline=None)
@given(log=st.lists(COMMANDS, max_size=60), cut=st.integers(0, 60))
def test_leases_expire_as_a_scan_of_every_key_would_expire_them(
    log: list[Command], cut: int
) -> None:
    scanning = ScanningState(idempotency_keys=3)
    indexed = StoreState(idempotency_keys=3)
    for n, command in enumerate(log):
        if n == cut:  # the deadlines are rebuilt from a snapshot
            restored = StoreState(idempotency_keys=3)
            restored.restore(indexed.snapshot())
            indexed = restored
        assert indexed.apply(command) == scanning.apply(command)
    assert indexed == scanning


def test_a_store_of_many_keys_applies_a_command_without_scanning_them() -> None:
    state = ScanningState()
    for n in range(2_000):
        state.apply(Put(f"k{n}", b"v", float(n)))
    indexed = StoreState()
    indexed.restore(state.snapshot())
    seen: list[str] = []
    indexed._kv = WatchedKeys(indexed._kv, seen)
    indexed.apply(LeaseGrant("lock", "n1", 5.0, 3_000.0))
    indexed.apply(Put("k1", b"w", 3_001.0))
    assert indexed.apply(Tick(3_010.0)).expired == ("lock",)
    assert len(seen) < 10


class WatchedKeys(dict[str, VersionedValue]):
    """The store's keys, noting every key an iteration over them visits."""

    def __init__(self, items: dict[str, VersionedValue], seen: list[str]) -> None:
        super().__init__(items)
        self.seen = seen

    def items(self) -> Any:
        for key, value in super().items():
            self.seen.append(key)
            yield key, value


# The in-process store behind the interface the consensus service serves.


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_local_store_serves_the_backend_interface() -> None:
    clock = FakeClock()
    store: ConsensusBackend = LocalStore("n1", clock=clock)
    status = await store.status()
    assert (status.backend, status.leader, [m.node for m in status.members]) == (
        "local",
        "n1",
        ["n1"],
    )
    written = await store.put("k", "v")
    assert (written.ok, written.revision, written.value) == (True, 1, "v")
    read = await store.get("k")
    assert (read.value, read.revision, read.lease) == ("v", 1, None)
    refused = await store.cas(KvCas(key="k", expected="wrong", value="w"))
    assert (refused.ok, refused.value, refused.revision) == (False, "v", 1)
    assert (await store.cas(KvCas(key="k", expected="v", value="w"))).value == "w"
    created = await store.cas(KvCas(key="new", expected_revision=0, value="1"))
    assert (created.ok, created.revision) == (True, 3)
    assert (await store.delete("new")).ok
    assert not (await store.delete("new")).ok

    def lease(action: LeaseAction, holder: str) -> LeaseRequest:
        return LeaseRequest(action=action, key="role", holder=holder, ttl_s=5)

    granted = await store.lease(lease("grant", "n1"))
    assert (granted.ok, granted.holder, granted.expires_at) == (True, "n1", 1_005)
    held = await store.get("role")
    assert (held.value, held.lease) == ("n1", "n1")  # a lease holds its key
    assert (await store.put("role", "x")).value == "n1"
    assert not (await store.put("role", "x")).ok
    assert not (await store.cas(KvCas(key="role", expected="n1", value="x"))).ok
    assert not (await store.delete("role")).ok
    assert (await store.get("role")).value == "n1"
    rival = await store.lease(lease("grant", "n2"))
    assert (rival.ok, rival.holder) == (False, "n1")
    assert not (await store.lease(lease("renew", "n2"))).ok
    clock.now += 4
    renewed = await store.lease(lease("renew", "n1"))
    assert (renewed.ok, renewed.expires_at) == (True, 1_009)
    clock.now += 6
    assert (await store.get("role")).value is None  # expired by the read's own time
    assert (await store.lease(lease("grant", "n2"))).holder == "n2"
    assert not (await store.lease(lease("release", "n1"))).ok
    assert (await store.lease(lease("release", "n2"))).ok
    assert (await store.get("role")).value is None

    first = await store.propose(DecisionProposal(record="d", idempotency_key="once"))
    again = await store.propose(DecisionProposal(record="d", idempotency_key="once"))
    assert (first.duplicate, again.seq, again.duplicate) == (False, first.seq, True)
    log = await store.decisions(DecisionQuery())
    assert [(d.seq, d.record, d.at) for d in log.decisions] == [(first.seq, "d", clock.now)]
    assert log.last_seq == first.seq

    with pytest.raises(NotSupported):
        await store.transfer("n2")


async def test_a_batch_through_the_backend_interface_answers_each_write() -> None:
    store: ConsensusBackend = LocalStore("n1", clock=FakeClock())
    outcomes = await store.batch(
        [
            KvBatchWrite(op="put", key="a", value="1"),
            KvBatchWrite(op="cas", key="a", value="2", expected="1"),
            KvBatchWrite(op="cas", key="b", value="1", expected_revision=5),
            KvBatchWrite(op="delete", key="a"),
        ]
    )
    assert [(o.key, o.ok, o.revision, o.value) for o in outcomes] == [
        ("a", True, 1, "1"),
        ("a", True, 2, "2"),
        ("b", False, 0, None),
        ("a", True, 0, None),
    ]


@pytest.mark.parametrize(
    "fields",
    [
        {"op": "put", "key": "k"},
        {"op": "delete", "key": "k", "value": "v"},
        {"op": "put", "key": "k", "value": "v", "expected": "o"},
        {"op": "delete", "key": "k", "expected_revision": 1},
    ],
)
def test_a_batch_write_carries_what_its_op_needs_and_no_more(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"a put or cas carries a value|only a cas expects"):
        KvBatchWrite(**fields)


def test_a_batch_reply_leaves_out_values_past_its_budget() -> None:
    outcomes = [KvWrite(key=f"k{n}", ok=False, revision=n + 1, value="v" * 400) for n in range(5)]
    reply = batch_reply([KvWrite(key="gone", ok=True, revision=0), *outcomes], budget=1000)
    assert [(w.value is not None, w.value_omitted) for w in reply.writes] == [
        (False, False),
        (True, False),
        (True, False),
        (False, True),
        (False, True),
        (False, True),
    ]
    assert [w.revision for w in reply.writes[1:]] == [1, 2, 3, 4, 5]
