"""A trainer the decision service excludes stays out of every selection until its lease ends."""

from __future__ import annotations

from meshmind.bus.protocol import (
    AnomalyInfo,
    ConsensusStatus,
    DecisionRecord,
    LeaseRequest,
    LeaseState,
    MemberChange,
)
from meshmind.consensus import LocalStore
from meshmind.decision import Actuators
from meshmind.federation import Candidate, exclusion_key, select_trainers

NODES = ["n1", "n2", "n3", "n4", "n5"]
TTL_S = 600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class LocalControl:
    """The consensus endpoints the actuators use, served by one in-process replica."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store

    async def status(self) -> ConsensusStatus:
        return await self.store.status()

    async def transfer(self, leader: str, to: str) -> ConsensusStatus:
        return await self.store.transfer(to)

    async def change(self, leader: str, change: MemberChange) -> ConsensusStatus:
        return await self.store.change_members(change)

    async def lease(self, request: LeaseRequest) -> LeaseState:
        return await self.store.lease(request)


def exclude(target: str) -> DecisionRecord:
    return DecisionRecord(
        key=f"trainer-failing/{target}/10.000000",
        anomaly=AnomalyInfo(kind="trainer-failing", subject=target, episode="10.000000"),
        action="exclude-trainer",
        target=target,
        ranking=["exclude-trainer", "restart-services", "wait"],
        proposer="n1",
        executor="n1",
        votes=[],
        quorum=3,
        members=NODES,
        decided_at=1_000.0,
    )


async def selected(store: LocalStore) -> list[str]:
    """Every host, best first, but those excluded now: as a coordinator selects."""
    excluded = {n for n in NODES if (await store.get(exclusion_key(n))).value is not None}
    return select_trainers([Candidate(n) for n in NODES], len(NODES), {}, excluded)


def test_selection_leaves_excluded_hosts_out_whatever_their_merit() -> None:
    candidates = [Candidate("n1", cpu_pct=90.0), Candidate("n2"), Candidate("n3")]
    quality = {"n1": 0.5, "n2": 1.0, "n3": 0.9}

    assert select_trainers(candidates, 2, quality, excluded={"n2"}) == ["n3", "n1"]
    assert select_trainers(candidates, 3, quality, excluded={"n1", "n2", "n3"}) == []


async def test_an_excluded_trainer_is_selected_again_once_its_exclusion_expires() -> None:
    clock = Clock()
    store = LocalStore("n1", clock=clock)
    actuators = Actuators("n1", "dry-run", LocalControl(store), exclusion_ttl_s=TTL_S)

    done = await actuators.act(exclude("n5"))

    assert done == "n5 excluded from training for 600s (fl/excluded/n5)"
    assert await selected(store) == ["n1", "n2", "n3", "n4"]
    clock.now += TTL_S - 1
    assert await selected(store) == ["n1", "n2", "n3", "n4"]
    clock.now += 1
    assert await selected(store) == NODES


async def test_excluding_an_excluded_trainer_again_extends_its_exclusion() -> None:
    clock = Clock()
    store = LocalStore("n1", clock=clock)
    first = Actuators("n1", "dry-run", LocalControl(store), exclusion_ttl_s=TTL_S)
    second = Actuators("n2", "dry-run", LocalControl(store), exclusion_ttl_s=TTL_S)

    await first.act(exclude("n5"))
    clock.now += TTL_S - 1
    await second.act(exclude("n5"))  # another host's decision, a later episode
    clock.now += TTL_S - 1

    assert await selected(store) == ["n1", "n2", "n3", "n4"]
    clock.now += 1
    assert await selected(store) == NODES


async def test_an_operators_exclusion_by_hand_is_left_alone() -> None:
    store = LocalStore("n1", clock=Clock())
    await store.put(exclusion_key("n4"), "broken radio")
    actuators = Actuators("n1", "dry-run", LocalControl(store), exclusion_ttl_s=TTL_S)

    done = await actuators.act(exclude("n4"))

    assert done == "n4 is excluded from training already (fl/excluded/n4 set by hand)"
    assert (await store.get(exclusion_key("n4"))).value == "broken radio"
    assert await selected(store) == ["n1", "n2", "n3", "n5"]
