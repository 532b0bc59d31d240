"""The backends under faults: a killed leader, killed hosts, hostile input, and a claim
left half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshmind.bus import Bus, BusError, Empty, ServiceError
from meshmind.bus.protocol import (
    CONSENSUS_BUCKET,
    CONSENSUS_CAS,
    CONSENSUS_GET,
    CONSENSUS_LOG,
    CONSENSUS_PROPOSE,
    CONSENSUS_PUT,
    CONSENSUS_STATUS,
    RAFT_MESSAGES,
    DecisionProposal,
    DecisionQuery,
    KvCas,
    KvKey,
    KvPut,
    RaftBatch,
    StoredValue,
)
from meshmind.consensus import encode_message
from meshmind.lab import node_names
from meshmind.raft import Vote
from tests.kit.consensus import ask, connect, consensus_lab, wait_for_leader
from tests.kit.waiting import eventually

NODES = node_names(3)


async def _put_until_ok(bus: Bus, key: str, value: str, *, within: float = 60.0) -> None:
    """Retry a put (a write may be refused or time out while there is no leader)."""

    async def put() -> bool:
        try:
            return (await ask(bus, CONSENSUS_PUT, KvPut(key=key, value=value), timeout=5)).ok
        except BusError:
            return False

    await eventually(put, within=within, every=0.2)


@pytest.mark.timeout(240)
async def test_writes_commit_again_after_the_leader_host_is_killed(tmp_path: Path) -> None:
    async with consensus_lab(tmp_path / "lab", NODES, "raft") as mesh:
        buses = {n: await connect(mesh, n) for n in NODES}
        try:
            leader = await wait_for_leader(buses["n1"])
            await _put_until_ok(buses[leader], "before", "1")
            await mesh.kill(leader)
            survivor = next(n for n in NODES if n != leader)
            await _put_until_ok(buses[survivor], "after", "2")
            new_leader = await wait_for_leader(buses[survivor])
            assert new_leader != leader
            assert (await ask(buses[survivor], CONSENSUS_GET, KvKey(key="before"))).value == "1"
        finally:
            for bus in buses.values():
                await bus.close()


@pytest.mark.timeout(240)
async def test_followers_that_find_the_leaders_service_gone_elect_before_their_timeout(
    tmp_path: Path,
) -> None:
    # An election timeout of 6-12 s: a new leader within 4 s of the kill is the detector's.
    async with consensus_lab(
        tmp_path / "lab", NODES, "raft", CONSENSUS_ELECTION_TICKS="60"
    ) as mesh:
        buses = {n: await connect(mesh, n) for n in NODES}
        try:
            leader = await wait_for_leader(buses["n1"], within=60)
            survivor = next(n for n in NODES if n != leader)
            await _put_until_ok(buses[survivor], "before", "1")
            await mesh.kill_services(leader)

            async def another_leader() -> bool:
                status = await ask(buses[survivor], CONSENSUS_STATUS, Empty())
                return status.leader not in (None, leader)

            await eventually(another_leader, within=4.0, every=0.1)
            await _put_until_ok(buses[survivor], "after", "2", within=10)
        finally:
            for bus in buses.values():
                await bus.close()


@pytest.mark.timeout(300)
async def test_every_acknowledged_entry_survives_kill_9_of_a_minority_then_of_all(
    tmp_path: Path,
) -> None:
    acknowledged: dict[str, str] = {}
    decisions: list[int] = []
    async with consensus_lab(tmp_path / "lab", NODES, "raft") as mesh:
        bus = await connect(mesh, "n1")
        try:
            await wait_for_leader(bus)

            async def write_batch(tag: str, count: int) -> None:
                for i in range(count):
                    key = f"{tag}/{i}"
                    await _put_until_ok(bus, key, f"v{i}")
                    acknowledged[key] = f"v{i}"
                ack = await ask(
                    bus, CONSENSUS_PROPOSE, DecisionProposal(record=tag, idempotency_key=tag)
                )
                decisions.append(ack.seq)

            await write_batch("first", 20)
            await mesh.kill("n3")
            await write_batch("minority-down", 20)
            await mesh.restart("n3")
            for node in NODES:
                await mesh.kill(node)
            for node in NODES:
                await mesh.restart(node)
            await bus.close()
            bus = await connect(mesh, "n3")
            await wait_for_leader(bus, within=60)
            for key, value in acknowledged.items():
                assert (await ask(bus, CONSENSUS_GET, KvKey(key=key))).value == value, key
            again = await ask(
                bus, CONSENSUS_PROPOSE, DecisionProposal(record="first", idempotency_key="first")
            )
            assert (again.seq, again.duplicate) == (decisions[0], True)
        finally:
            await bus.close()


@pytest.mark.timeout(240)
async def test_garbage_impersonation_and_oversized_proposals_are_refused_and_counted(
    tmp_path: Path,
) -> None:
    async with consensus_lab(tmp_path / "lab", NODES, "raft") as mesh:
        bus = await connect(mesh, "n1")
        hub = await Bus.connect(
            type(bus.settings)(node_id="operator", nats_url=mesh.hub_url), name="hostile"
        )
        try:
            await wait_for_leader(bus)
            await _put_until_ok(bus, "kept", "safe")
            before = await ask(bus, CONSENSUS_STATUS, Empty())
            subject = RAFT_MESSAGES.render(node="n2", peer="n1")
            await hub.publish_raw(subject, b"\xc1 not msgpack")
            forged = Vote("n3", "n1", before.term + 100, 10**9, before.term + 100)
            await hub.publish(
                RAFT_MESSAGES,
                RaftBatch(node="n2", peer="n1", messages=[encode_message(forged), b"\x93\x01"]),
                node="n2",
                peer="n1",
            )
            await hub.publish(
                RAFT_MESSAGES,
                RaftBatch(node="n3", peer="n1", messages=[encode_message(forged)]),
                node="n2",
                peer="n1",
            )
            with pytest.raises(ServiceError) as too_large:
                await ask(bus, CONSENSUS_PUT, KvPut.model_construct(key="big", value="x" * 200_000))
            assert too_large.value.code == 413
            with pytest.raises(ServiceError) as refused:
                await ask(bus, CONSENSUS_PUT, KvPut.model_construct(key="big", value="x" * 70_000))
            assert refused.value.code == 400

            async def counted() -> dict[str, int]:
                status = await ask(bus, CONSENSUS_STATUS, Empty())
                wanted = {"malformed", "impersonation", "invalid_batch"}
                return status.rejected if wanted <= set(status.rejected) else {}

            await eventually(counted, within=10)
            after = await ask(bus, CONSENSUS_STATUS, Empty())
            assert after.rejected["invalid_batch"] >= 2
            assert after.term < before.term + 100
            assert (await ask(bus, CONSENSUS_GET, KvKey(key="kept"))).value == "safe"
            assert (await ask(bus, CONSENSUS_GET, KvKey(key="big"))).value is None
            await _put_until_ok(bus, "still", "writable")
        finally:
            await hub.close()
            await bus.close()


@pytest.mark.timeout(240)
async def test_jetstream_a_claim_left_without_its_log_entry_is_finished_by_the_next_claimant(
    tmp_path: Path,
) -> None:
    """A host that stopped between the bucket write and the stream append left the record in
    the bucket; the next cas on that key with the same log key appends it, once."""
    async with consensus_lab(tmp_path / "lab", NODES, "jetstream") as mesh:
        bus = await connect(mesh, "n2")
        try:
            await wait_for_leader(bus)
            bucket = await bus.hub().key_value(CONSENSUS_BUCKET.name, StoredValue)
            left = StoredValue(value="n1 acts", log_record="n1 acts", log_key="claim-s")
            await bucket.put("claims/s", left)
            claim = KvCas(key="claims/s", value="n2 acts", log_record="n2 acts", log_key="claim-s")
            lost = await ask(bus, CONSENSUS_CAS, claim)
            again = await ask(bus, CONSENSUS_CAS, claim)
            log = await ask(bus, CONSENSUS_LOG, DecisionQuery())
        finally:
            await bus.close()
    assert (lost.ok, lost.value) == (False, "n1 acts")
    assert lost.seq is not None
    assert again.seq == lost.seq
    assert [(d.seq, d.record) for d in log.decisions if d.idempotency_key == "claim-s"] == [
        (lost.seq, "n1 acts")
    ]
