"""The decision loop with its ports in memory: every host proposing the same anomaly at once
commits one decision, executed once; a host alone in its view gets nothing agreed; outcomes
reach the knowledge base and change the next plan; refused updates get a trainer excluded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from typing import Literal

import pytest

from meshmind.bus import ServiceError
from meshmind.bus.protocol import (
    Decision,
    DecisionAck,
    DecisionEvent,
    DecisionList,
    DecisionRecord,
    FlRoundMetrics,
    KvCas,
    KvEntryInfo,
    KvWrite,
    PeerChange,
    VoteReply,
    VoteRequest,
)
from meshmind.decision import DecisionEngine, EngineSettings, NotAgreed
from tests.kit.waiting import eventually

NODES = ["n1", "n2", "n3", "n4", "n5"]
FAST = EngineSettings(retry_s=0.01, settle_s=0.0, stagger_s=0.0, outcome_s=0.2)


@dataclass
class Store:
    """A linearizable store and an idempotent log, as the consensus service keeps them."""

    kv: dict[str, tuple[str, int]] = field(default_factory=dict)
    log: list[Decision] = field(default_factory=list)
    revision: int = 0

    def get(self, key: str) -> KvEntryInfo:
        value, revision = self.kv.get(key, (None, 0))
        return KvEntryInfo(key=key, value=value, revision=revision)

    def logged(self, idempotency_key: str) -> Decision | None:
        return next((d for d in self.log if d.idempotency_key == idempotency_key), None)

    def write(self, key: str, value: str) -> KvWrite:
        self.revision += 1
        self.kv[key] = (value, self.revision)
        return KvWrite(key=key, ok=True, revision=self.revision, value=value)


def opened() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass
class Ports:
    node: str
    store: Store
    engines: dict[str, DecisionEngine]
    acted: list[DecisionRecord]
    events: list[DecisionEvent]
    stalled: bool = False
    unavailable: int = 0
    """How many store calls from now on fail with a 503."""
    answers_lost: int = 0
    """How many cas calls from now on are written, and then answered with a 503."""
    reads_open: asyncio.Event = field(default_factory=opened)

    async def vote(self, peer: str, request: VoteRequest, timeout_s: float) -> VoteReply:
        await asyncio.sleep(0)
        if peer not in self.engines:
            raise ServiceError(503, f"{peer} is down")
        return await self.engines[peer].vote(request)

    def _maybe_unavailable(self) -> None:
        if self.unavailable:
            self.unavailable -= 1
            raise ServiceError(503, "consensus unavailable: no leader yet")

    async def get(self, key: str) -> KvEntryInfo:
        await self.reads_open.wait()
        self._maybe_unavailable()
        return self.store.get(key)

    async def cas(self, request: KvCas) -> KvWrite:
        await asyncio.sleep(0)
        self._maybe_unavailable()
        current = self.store.get(request.key)
        if request.expected_revision is not None:
            matches = current.revision == request.expected_revision
        else:
            matches = current.value == request.expected
        logged = self.store.logged(request.log_key) if request.log_key else None
        if not matches:
            return KvWrite(
                key=request.key,
                ok=False,
                revision=current.revision,
                value=current.value,
                seq=logged.seq if logged is not None else None,
            )
        written = self.store.write(request.key, request.value)
        if request.log_record is None or request.log_key is None:
            return written
        ack = await self.append(request.log_record, request.log_key)
        if self.answers_lost:
            self.answers_lost -= 1
            raise ServiceError(503, "the leader fell before it answered")
        return written.model_copy(update={"seq": ack.seq})

    async def put(self, key: str, value: str) -> KvWrite:
        return self.store.write(key, value)

    async def append(self, record: str, idempotency_key: str) -> DecisionAck:
        earlier = self.store.logged(idempotency_key)
        if earlier is not None:
            return DecisionAck(seq=earlier.seq, duplicate=True)
        seq = len(self.store.log) + 1
        self.store.log.append(
            Decision(seq=seq, record=record, idempotency_key=idempotency_key, at=0)
        )
        return DecisionAck(seq=seq, duplicate=False)

    async def log(self, after: int, limit: int) -> DecisionList:
        self._maybe_unavailable()
        page = [d for d in self.store.log if d.seq > after][:limit]
        return DecisionList(decisions=page, last_seq=len(self.store.log))

    async def publish(self, event: DecisionEvent) -> None:
        self.events.append(event)

    async def act(self, record: DecisionRecord) -> str:
        if self.stalled:  # the host dies before its actuator runs
            await asyncio.Event().wait()
        self.acted.append(record)
        self.engines[record.executor].situation.peer_joined(record.target, 2000.0)
        return f"restarted {record.target}"


def mesh(
    nodes: list[str], settings: EngineSettings = FAST
) -> tuple[dict[str, DecisionEngine], Store, list[DecisionRecord]]:
    store = Store()
    engines: dict[str, DecisionEngine] = {}
    acted: list[DecisionRecord] = []
    events: list[DecisionEvent] = []
    for node in nodes:
        engine = DecisionEngine(node, Ports(node, store, engines, acted, events), settings)
        engine.consensus_view(set(NODES), set(NODES), "n1")
        engine.peers_listed(dict.fromkeys(NODES, 1000.0))
        engines[node] = engine
    return engines, store, acted


async def test_every_host_proposing_the_same_departure_at_once_commits_it_once() -> None:
    engines, store, acted = mesh(NODES)
    del engines["n3"]  # n3's services died
    gone = [e.situation.peer_left("n3", 1000.0, at=5.0) for e in engines.values()]
    assert len({a.key for a in gone}) == 1

    records = await asyncio.gather(
        *(
            engine.decide(anomaly, 5.0)
            for engine, anomaly in zip(engines.values(), gone, strict=True)
        )
    )

    assert len({r.model_dump_json() for r in records}) == 1  # the losers' carry its seq too
    assert records[0].seq == 1
    await asyncio.sleep(0.5)  # the executor acts and watches the outcome
    assert [d.idempotency_key for d in store.log] == [gone[0].key, f"outcome/{gone[0].key}"]
    assert [(r.action, r.target) for r in acted] == [("restart-services", "n3")]
    knowledge = json.loads(store.get("decision/knowledge").value or "{}")
    assert knowledge == {"host-gone": {"restart-services": [1, 1]}}
    assert DecisionRecord.model_validate_json(store.log[-1].record).outcome == "cleared"
    for engine in engines.values():
        await engine.close()


async def test_a_claim_whose_answer_is_lost_is_still_executed_once() -> None:
    engines, store, acted = mesh(NODES)
    del engines["n3"]
    proposer = engines["n1"]
    anomaly = proposer.situation.peer_left("n3", 1000.0, at=5.0)
    for node in ("n2", "n4", "n5"):
        engines[node].situation.peer_left("n3", 1000.0, at=5.0)
    assert isinstance(proposer.ports, Ports)
    proposer.ports.answers_lost = 1

    record = await proposer.decide(anomaly, 5.0)

    assert (record.executor, record.seq) == ("n1", 1)
    await asyncio.sleep(0.5)
    assert [(r.action, r.target) for r in acted] == [("restart-services", "n3")]
    assert [d.idempotency_key for d in store.log] == [anomaly.key, f"outcome/{anomaly.key}"]
    for engine in engines.values():
        await engine.close()


async def test_a_host_alone_in_its_view_gets_nothing_agreed() -> None:
    engines, store, acted = mesh(NODES)
    lonely = engines["n3"]
    for node in ("n1", "n2", "n4", "n5"):  # n3's link is cut: everyone seems gone to it
        lonely.situation.peer_left(node, 1000.0, at=5.0)
    for node in ("n1", "n2", "n4", "n5"):
        engines[node].situation.peer_left("n3", 1000.0, at=5.0)
    anomaly = lonely.situation.peer_left("n1", 1000.0, at=5.0)

    with pytest.raises(NotAgreed) as refused:
        await lonely.decide(anomaly, 1.0)

    assert refused.value.description.startswith("1 of 3 approvals needed")
    assert "n2: host-gone/n1/1000.000000 does not hold in n2's view" in refused.value.description
    assert store.log == []
    assert acted == []


async def test_knowledge_of_a_failing_action_changes_the_next_plan() -> None:
    engines, store, _ = mesh(NODES)
    store.write("decision/knowledge", json.dumps({"host-gone": {"restart-services": [4, 0]}}))
    del engines["n3"]
    gone = engines["n1"].situation.peer_left("n3", 1000.0, at=5.0)
    for node in ("n2", "n4", "n5"):
        engines[node].situation.peer_left("n3", 1000.0, at=5.0)

    record = await engines["n1"].decide(gone, 5.0)

    assert record.action == "wait"
    assert record.ranking == ["wait", "restart-services"]
    for engine in engines.values():
        await engine.close()


async def test_plans_use_the_knowledge_read_before_while_a_fresh_read_is_slow() -> None:
    engines, store, _ = mesh(NODES, replace(FAST, knowledge_cache_s=0.0))
    n1 = engines["n1"]
    assert (await n1.knowledge()).outcomes == {}
    store.write("decision/knowledge", json.dumps({"host-gone": {"restart-services": [4, 0]}}))
    ports = n1.ports
    assert isinstance(ports, Ports)
    ports.reads_open.clear()  # the store is slow to answer from now on

    assert (await asyncio.wait_for(n1.knowledge(), 1.0)).outcomes == {}

    ports.reads_open.set()

    async def reread() -> bool:
        return (await n1.knowledge()).outcomes != {}

    await eventually(reread, within=2.0)
    for engine in engines.values():
        await engine.close()


def fl_round(
    number: int, *, selected: list[str], refused: tuple[str, ...] = (), missed: tuple[str, ...] = ()
) -> FlRoundMetrics:
    """Round ``number`` of job j1 on n1 at ``10 * number``: the selected trainers took part,
    but for those whose update was refused and those that missed the deadline."""
    participants = [n for n in selected if n not in refused and n not in missed]
    return FlRoundMetrics(
        job_id="j1",
        coordinator="n1",
        round=number,
        version=number,
        accuracy=0.9,
        loss=0.3,
        participants=participants,
        weights={n: 1 / len(participants) for n in participants},
        link_quality=dict.fromkeys(participants, 1.0),
        examples=dict.fromkeys(participants, 100),
        rejected=dict.fromkeys(refused, "update has non-finite values"),
        selected=selected,
        bytes_down=0,
        bytes_up=0,
        wall_s=5.0,
        at=10.0 * number,
    )


async def every_host_sees(engines: dict[str, DecisionEngine], metrics: FlRoundMetrics) -> None:
    for engine in engines.values():
        await engine.on_fl_round(metrics)


def logged(store: Store) -> list[DecisionRecord]:
    return [DecisionRecord.model_validate_json(d.record) for d in store.log]


async def test_a_trainer_refused_in_three_rounds_is_excluded_by_one_decision() -> None:
    engines, store, acted = mesh(NODES, replace(FAST, outcome_s=60.0))
    for number in (1, 2, 3):
        await every_host_sees(engines, fl_round(number, selected=NODES, refused=("n5",)))

    await eventually(lambda: acted, within=10)
    [record] = acted
    assert (record.action, record.target) == ("exclude-trainer", "n5")
    assert record.key == "trainer-failing/n5/10.000000"
    assert record.proposer != "n5"  # the trainer's own host leaves it to the others
    assert sum(v.approve for v in record.votes) >= record.quorum == 3
    assert [e.at for e in record.anomaly.evidence] == [10.0, 20.0, 30.0]
    assert all("refused the update of n5" in e.what for e in record.anomaly.evidence)

    await every_host_sees(engines, fl_round(4, selected=NODES[:4]))  # n5 is left out

    await eventually(lambda: len(store.log) == 2, within=10)
    assert [d.idempotency_key for d in store.log] == [record.key, f"outcome/{record.key}"]
    assert logged(store)[-1].outcome == "cleared"
    knowledge = json.loads(store.get("decision/knowledge").value or "{}")
    assert knowledge == {"trainer-failing": {"exclude-trainer": [1, 1]}}
    assert len(acted) == 1
    for engine in engines.values():
        await engine.close()


async def test_rounds_a_trainer_took_part_in_or_missed_the_deadline_of_are_no_failures() -> None:
    engines, _, acted = mesh(NODES, replace(FAST, outcome_s=60.0))
    rounds = [
        fl_round(1, selected=NODES, refused=("n5",)),
        fl_round(2, selected=NODES),  # took part
        fl_round(3, selected=NODES, missed=("n5",)),  # behind a slow link, perhaps
        fl_round(4, selected=NODES, refused=("n5",)),
        fl_round(5, selected=NODES, missed=("n5",)),
    ]
    for metrics in rounds:
        await every_host_sees(engines, metrics)
    assert not any(e.situation.failing_trainers for e in engines.values())

    await every_host_sees(engines, fl_round(6, selected=NODES, refused=("n5",)))

    await eventually(lambda: acted, within=10)
    [record] = acted
    assert record.key == "trainer-failing/n5/10.000000"
    assert [e.at for e in record.anomaly.evidence] == [10.0, 40.0, 60.0]
    for engine in engines.values():
        await engine.close()


async def executor_stalls_after_committing(
    engines: dict[str, DecisionEngine], store: Store
) -> DecisionRecord:
    """n3's services died; n1 commits the decision to restart them, and dies before acting."""
    del engines["n3"]
    stalled = engines["n1"]
    ports = stalled.ports
    assert isinstance(ports, Ports)
    ports.stalled = True
    gone = [e.situation.peer_left("n3", 1000.0, at=5.0) for e in engines.values()]
    record = await stalled.decide(gone[0], 5.0)
    assert record.executor == "n1"
    await stalled.close()
    del engines["n1"]
    return record


def n1_changed(
    engines: dict[str, DecisionEngine], kind: Literal["joined", "left"]
) -> list[Awaitable[None]]:
    return [
        engine.on_peer_change(PeerChange(observer=node, node="n1", kind=kind, peer=None, at=6.0))
        for node, engine in engines.items()
    ]


def stored_decision(store: Store, key: str) -> DecisionRecord:
    return DecisionRecord.model_validate_json(store.get(f"decision/anomaly/{key}").value or "")


async def left_with_n1(
    engines: dict[str, DecisionEngine],
    store: Store,
    acted: list[DecisionRecord],
    record: DecisionRecord,
) -> None:
    """Past the outcome deadline, nobody acted on n3 and the decision is still n1's."""
    await asyncio.sleep(FAST.outcome_s + 0.5)
    assert [r for r in acted if r.target == "n3"] == []
    assert stored_decision(store, record.key).executor == "n1"
    for engine in engines.values():
        await engine.close()


async def test_a_decision_whose_executor_departs_before_acting_is_taken_over_once() -> None:
    engines, store, acted = mesh(NODES)
    record = await executor_stalls_after_committing(engines, store)

    await asyncio.gather(*n1_changed(engines, "left"))

    await eventually(lambda: stored_decision(store, record.key).outcome is not None, within=5.0)
    final = stored_decision(store, record.key)
    assert final.taken_over_from == "n1"
    assert final.executor in {"n2", "n4", "n5"}
    assert final.outcome == "cleared"
    assert [(r.action, r.executor) for r in acted if r.target == "n3"] == [
        ("restart-services", final.executor)
    ]
    assert [d.idempotency_key for d in store.log if record.key in d.idempotency_key] == [
        record.key,
        f"takeover/{record.key}/n1",
        f"outcome/{record.key}",
    ]
    for engine in engines.values():
        await engine.close()


async def test_a_takeover_waits_out_a_store_without_a_leader() -> None:
    engines, store, acted = mesh(NODES)
    record = await executor_stalls_after_committing(engines, store)
    for engine in engines.values():
        ports = engine.ports
        assert isinstance(ports, Ports)
        ports.unavailable = 6  # the departed host led the consensus group

    await asyncio.gather(*n1_changed(engines, "left"))

    await eventually(lambda: stored_decision(store, record.key).outcome is not None, within=10.0)
    assert [r.executor for r in acted if r.target == "n3"] == [
        stored_decision(store, record.key).executor
    ]
    for engine in engines.values():
        await engine.close()


async def test_an_executor_that_comes_back_keeps_its_decision() -> None:
    engines, store, acted = mesh(NODES)
    record = await executor_stalls_after_committing(engines, store)

    await asyncio.gather(*n1_changed(engines, "left"))
    await asyncio.gather(*n1_changed(engines, "joined"))  # a flap: n1 was there all along

    await left_with_n1(engines, store, acted, record)


async def test_a_departed_executors_decision_whose_anomaly_cleared_is_left_alone() -> None:
    engines, store, acted = mesh(NODES)
    record = await executor_stalls_after_committing(engines, store)
    for engine in engines.values():
        engine.situation.peer_joined("n3", 2000.0)  # n3 came back by itself

    await asyncio.gather(*n1_changed(engines, "left"))

    await left_with_n1(engines, store, acted, record)
