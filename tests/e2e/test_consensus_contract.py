"""One contract, two backends: the consensus service behaves the same over Raft and JetStream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from meshmind.bus import Bus, Empty
from meshmind.bus.protocol import (
    CONSENSUS_BATCH,
    CONSENSUS_CAS,
    CONSENSUS_COMMITTED,
    CONSENSUS_DELETE,
    CONSENSUS_GET,
    CONSENSUS_LEASE,
    CONSENSUS_LOG,
    CONSENSUS_PROPOSE,
    CONSENSUS_PUT,
    CONSENSUS_STATUS,
    AppliedEntry,
    DecisionProposal,
    DecisionQuery,
    KvBatch,
    KvBatchWrite,
    KvCas,
    KvKey,
    KvPut,
    LeaseAction,
    LeaseRequest,
    LeaseState,
    LinkShape,
)
from meshmind.consensus import BatchingWriter
from meshmind.lab import LocalMesh, node_names
from tests.kit.consensus import ask, connect, consensus_lab, wait_for_leader
from tests.kit.recorder import Recorder
from tests.kit.waiting import eventually

NODES = node_names(3)
pytestmark = pytest.mark.asyncio(loop_scope="class")


async def _lease(
    bus: Bus, action: LeaseAction, key: str, holder: str, ttl_s: float = 10.0
) -> LeaseState:
    request = LeaseRequest(action=action, key=key, holder=holder, ttl_s=ttl_s)
    return await ask(bus, CONSENSUS_LEASE, request)


@pytest_asyncio.fixture(scope="class", loop_scope="class", params=["raft", "jetstream"])
async def lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[LocalMesh, dict[str, Bus]]]:
    backend: str = request.param
    run_dir: Path = tmp_path_factory.mktemp(f"consensus-{backend}")
    async with consensus_lab(run_dir, NODES, backend) as mesh:
        buses = {node: await connect(mesh, node) for node in NODES}
        try:
            for bus in buses.values():  # every host's service serves, and knows a leader
                await wait_for_leader(bus)
            yield mesh, buses
        finally:
            for bus in buses.values():
                await bus.close()


@pytest.mark.timeout(240)
class TestConsensusContract:
    """Every host answers, whichever is the leader; writes on one are read on another."""

    async def test_put_then_get_from_another_host(
        self, lab: tuple[LocalMesh, dict[str, Bus]]
    ) -> None:
        _, buses = lab
        written = await ask(buses["n1"], CONSENSUS_PUT, KvPut(key="roles/a", value="one"))
        assert written.ok
        assert written.revision > 0
        for node in NODES:
            read = await ask(buses[node], CONSENSUS_GET, KvKey(key="roles/a"))
            assert (read.value, read.revision) == ("one", written.revision)
        missing = await ask(buses["n3"], CONSENSUS_GET, KvKey(key="roles/none"))
        assert missing.value is None

    async def test_cas_succeeds_on_the_expected_value_and_reports_conflicts(
        self, lab: tuple[LocalMesh, dict[str, Bus]]
    ) -> None:
        _, buses = lab
        created = await ask(buses["n2"], CONSENSUS_CAS, KvCas(key="c", expected=None, value="1"))
        assert created.ok
        again = await ask(buses["n3"], CONSENSUS_CAS, KvCas(key="c", expected=None, value="x"))
        assert (again.ok, again.value, again.revision) == (False, "1", created.revision)
        swapped = await ask(buses["n1"], CONSENSUS_CAS, KvCas(key="c", expected="1", value="2"))
        assert swapped.ok
        assert swapped.revision > created.revision
        stale = await ask(
            buses["n2"],
            CONSENSUS_CAS,
            KvCas(key="c", expected_revision=created.revision, value="3"),
        )
        assert (stale.ok, stale.value) == (False, "2")
        by_revision = await ask(
            buses["n2"],
            CONSENSUS_CAS,
            KvCas(key="c", expected_revision=swapped.revision, value="3"),
        )
        assert by_revision.ok
        assert (await ask(buses["n3"], CONSENSUS_GET, KvKey(key="c"))).value == "3"

    async def test_delete_removes_a_key_once(self, lab: tuple[LocalMesh, dict[str, Bus]]) -> None:
        _, buses = lab
        await ask(buses["n1"], CONSENSUS_PUT, KvPut(key="gone", value="v"))
        deleted = await ask(buses["n2"], CONSENSUS_DELETE, KvKey(key="gone"))
        assert deleted.ok
        assert (await ask(buses["n3"], CONSENSUS_GET, KvKey(key="gone"))).value is None
        assert not (await ask(buses["n1"], CONSENSUS_DELETE, KvKey(key="gone"))).ok
        recreated = await ask(buses["n1"], CONSENSUS_CAS, KvCas(key="gone", value="back"))
        assert recreated.ok

    async def test_a_batch_answers_each_write_and_keeps_each_keys_order(
        self, lab: tuple[LocalMesh, dict[str, Bus]]
    ) -> None:
        _, buses = lab
        await _lease(buses["n1"], "grant", "batch/held", "a")
        writes = [
            KvBatchWrite(op="put", key="batch/a", value="1"),
            KvBatchWrite(op="put", key="batch/b", value="1"),
            KvBatchWrite(op="cas", key="batch/a", value="2", expected="1"),
            KvBatchWrite(op="cas", key="batch/b", value="2", expected="wrong"),
            KvBatchWrite(op="put", key="batch/held", value="x"),
            KvBatchWrite(op="delete", key="batch/a"),
            KvBatchWrite(op="cas", key="batch/a", value="3", expected_revision=0),
        ]
        outcomes = (await ask(buses["n2"], CONSENSUS_BATCH, KvBatch(writes=writes))).writes
        assert [(o.key, o.ok, o.value) for o in outcomes] == [
            ("batch/a", True, "1"),
            ("batch/b", True, "1"),
            ("batch/a", True, "2"),
            ("batch/b", False, "1"),
            ("batch/held", False, "a"),
            ("batch/a", True, None),
            ("batch/a", True, "3"),
        ]
        assert outcomes[2].revision > outcomes[0].revision
        read = await ask(buses["n3"], CONSENSUS_GET, KvKey(key="batch/a"))
        assert (read.value, read.revision) == ("3", outcomes[-1].revision)

    async def test_a_batch_is_one_entry_and_an_applied_event_per_write(
        self, lab: tuple[LocalMesh, dict[str, Bus]]
    ) -> None:
        _, buses = lab
        status = await ask(buses["n1"], CONSENSUS_STATUS, Empty())
        if status.backend != "raft":
            pytest.skip("only the raft backend applies entries and publishes them")
        applied = await Recorder.start(buses["n3"], CONSENSUS_COMMITTED, node="n3")
        await asyncio.sleep(0.2)  # the subscription reaches the hub
        writes = [
            KvBatchWrite(op="put", key="events/a", value="1"),
            KvBatchWrite(op="cas", key="events/a", value="2", expected="wrong"),
            KvBatchWrite(op="delete", key="events/a"),
        ]
        await ask(buses["n1"], CONSENSUS_BATCH, KvBatch(writes=writes))

        def events() -> list[AppliedEntry]:
            return [e for _, c in applied.events for e in c.entries if e.key == "events/a"]

        await eventually(lambda: len(events()) == 3, within=10)
        assert [(e.op, e.ok) for e in events()] == [("put", True), ("cas", False), ("delete", True)]
        assert len({e.index for e in events()}) == 1

    async def test_concurrent_writes_share_batch_requests_each_acknowledged(
        self, lab: tuple[LocalMesh, dict[str, Bus]]
    ) -> None:
        _, buses = lab
        writer = BatchingWriter(buses["n3"], in_flight=1)
        try:
            outcomes = await asyncio.gather(
                *(writer.put(f"shared/{n}", str(n)) for n in range(200)),
                writer.cas("shared/0", "again", expected="0"),
            )
        finally:
            await writer.close()
        assert all(o.ok for o in outcomes)
        assert writer.requests < 20  # one request per write would be 201
        reads = await asyncio.gather(
            *(ask(buses["n1"], CONSENSUS_GET, KvKey(key=f"shared/{n}")) for n in range(200))
        )
        assert [r.value for r in reads] == ["again", *(str(n) for n in range(1, 200))]

    async def test_batched_writes_over_a_slow_stalling_link_are_each_answered_in_order(
        self, lab: tuple[LocalMesh, dict[str, Bus]]
    ) -> None:
        mesh, buses = lab
        mesh.host("n3").link.set_shape(LinkShape(delay_ms=250, stall_pct=5))
        writer = BatchingWriter(buses["n3"], timeout=20)
        try:
            outcomes = await asyncio.gather(
                *(writer.put(f"slow/{n % 20}", str(n)) for n in range(300))
            )
        finally:
            await writer.close()
            mesh.host("n3").link.set_shape(LinkShape())
        assert all(o.ok for o in outcomes)
        assert writer.requests <= 40  # 300 writes to 20 keys, each key's in turn
        reads = await asyncio.gather(
            *(ask(buses["n1"], CONSENSUS_GET, KvKey(key=f"slow/{k}")) for k in range(20))
        )
        assert [r.value for r in reads] == [str(280 + k) for k in range(20)]  # each key's last

    async def test_a_lease_is_held_renewed_and_released_by_its_holder_only(
        self, lab: tuple[LocalMesh, dict[str, Bus]]
    ) -> None:
        _, buses = lab
        key = "lease/coordinator"
        granted = await _lease(buses["n1"], "grant", key, "a")
        assert (granted.ok, granted.holder) == (True, "a")
        assert granted.expires_at is not None
        rival = await _lease(buses["n2"], "grant", key, "b")
        assert (rival.ok, rival.holder) == (False, "a")
        foreign_renew = await _lease(buses["n3"], "renew", key, "b")
        assert not foreign_renew.ok
        renewed = await _lease(buses["n3"], "renew", key, "a")
        assert renewed.ok
        assert renewed.expires_at is not None
        assert renewed.expires_at >= granted.expires_at
        assert (await ask(buses["n2"], CONSENSUS_GET, KvKey(key=key))).lease == "a"
        foreign_release = await _lease(buses["n2"], "release", key, "b")
        assert not foreign_release.ok
        released = await _lease(buses["n1"], "release", key, "a")
        assert released.ok
        taken = await _lease(buses["n2"], "grant", key, "b")
        assert (taken.ok, taken.holder) == (True, "b")

    async def test_a_lease_holds_its_key_against_plain_writes(
        self, lab: tuple[LocalMesh, dict[str, Bus]]
    ) -> None:
        _, buses = lab
        key = "lease/held"
        granted = await _lease(buses["n1"], "grant", key, "a")
        assert granted.ok
        held = await ask(buses["n2"], CONSENSUS_GET, KvKey(key=key))
        assert (held.value, held.lease) == ("a", "a")
        put = await ask(buses["n2"], CONSENSUS_PUT, KvPut(key=key, value="x"))
        assert (put.ok, put.value, put.revision) == (False, "a", held.revision)
        cas = await ask(buses["n3"], CONSENSUS_CAS, KvCas(key=key, expected="a", value="x"))
        assert (cas.ok, cas.value) == (False, "a")
        deleted = await ask(buses["n1"], CONSENSUS_DELETE, KvKey(key=key))
        assert not deleted.ok
        assert (await ask(buses["n3"], CONSENSUS_GET, KvKey(key=key))).value == "a"
        plain = await ask(buses["n1"], CONSENSUS_PUT, KvPut(key="plain", value="v"))
        assert plain.ok
        over_plain = await _lease(buses["n2"], "grant", "plain", "a")
        assert (over_plain.ok, over_plain.holder) == (False, None)
        released = await _lease(buses["n2"], "release", key, "a")
        assert released.ok
        assert (await ask(buses["n3"], CONSENSUS_GET, KvKey(key=key))).value is None
        assert (await ask(buses["n3"], CONSENSUS_PUT, KvPut(key=key, value="free"))).ok

    async def test_a_lease_expires_after_its_ttl_without_any_write(
        self, lab: tuple[LocalMesh, dict[str, Bus]]
    ) -> None:
        _, buses = lab
        key = "lease/short"
        granted = await _lease(buses["n1"], "grant", key, "a", ttl_s=1.0)
        assert granted.ok
        await asyncio.sleep(2.5)
        assert (await ask(buses["n2"], CONSENSUS_GET, KvKey(key=key))).value is None
        renew = await _lease(buses["n3"], "renew", key, "a")
        assert not renew.ok
        taken = await _lease(buses["n2"], "grant", key, "b")
        assert (taken.ok, taken.holder) == (True, "b")

    async def test_decisions_are_appended_once_and_in_order(
        self, lab: tuple[LocalMesh, dict[str, Bus]]
    ) -> None:
        _, buses = lab
        first = await ask(
            buses["n1"], CONSENSUS_PROPOSE, DecisionProposal(record="r1", idempotency_key="k1")
        )
        second = await ask(
            buses["n2"], CONSENSUS_PROPOSE, DecisionProposal(record="r2", idempotency_key="k2")
        )
        retry = await ask(
            buses["n3"], CONSENSUS_PROPOSE, DecisionProposal(record="r1", idempotency_key="k1")
        )
        assert not first.duplicate
        assert second.seq > first.seq
        assert (retry.seq, retry.duplicate) == (first.seq, True)
        page = await ask(buses["n3"], CONSENSUS_LOG, DecisionQuery(after=first.seq - 1))
        assert [(d.record, d.idempotency_key) for d in page.decisions] == [
            ("r1", "k1"),
            ("r2", "k2"),
        ]
        assert [d.seq for d in page.decisions] == [first.seq, second.seq]
        assert page.last_seq == second.seq

    async def test_a_cas_with_a_log_record_appends_it_once_with_the_winning_write(
        self, lab: tuple[LocalMesh, dict[str, Bus]]
    ) -> None:
        _, buses = lab
        claims = [
            KvCas(key="claims/a", value=f"{n} acts", log_record=f"{n} acts", log_key="claim-a")
            for n in NODES
        ]
        writes = await asyncio.gather(
            *(ask(buses[n], CONSENSUS_CAS, claim) for n, claim in zip(NODES, claims, strict=True))
        )
        winners = [w for w in writes if w.ok]
        assert len(winners) == 1
        assert all(w.value == winners[0].value for w in writes)
        assert {w.seq for w in writes} == {winners[0].seq}  # losers learn the winner's entry
        assert winners[0].seq is not None
        page = await ask(buses["n2"], CONSENSUS_LOG, DecisionQuery(after=winners[0].seq - 1))
        assert [(d.record, d.idempotency_key) for d in page.decisions] == [
            (winners[0].value, "claim-a")
        ]

    async def test_status_names_the_backend_and_the_leader(
        self, lab: tuple[LocalMesh, dict[str, Bus]]
    ) -> None:
        _, buses = lab
        statuses = [await ask(buses[n], CONSENSUS_STATUS, Empty()) for n in NODES]
        assert {s.node for s in statuses} == set(NODES)
        assert len({s.backend for s in statuses}) == 1
        assert all(s.leader is not None for s in statuses)
        assert all(s.applied_index <= s.commit_index for s in statuses)
        if statuses[0].backend == "raft":
            assert len({s.leader for s in statuses}) == 1
            assert {m.node for m in statuses[0].members} == set(NODES)
            assert all(m.voter for m in statuses[0].members)
