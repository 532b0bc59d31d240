"""Dijkstra-Scholten under random delays, orders and duplicates: never early, always in the end."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from meshmind.decision import DetectorError, Signal, TerminationDetector, Work

COMPUTATION = "sweep-1"


@dataclass
class _Run:
    """A diffusing computation over ``size`` nodes with a network that reorders and duplicates."""

    rng: random.Random
    size: int
    duplicate_pct: float
    nodes: dict[str, TerminationDetector] = field(default_factory=dict)
    jobs: dict[str, list[int]] = field(default_factory=dict)
    """Per node, the hop budgets of work it has taken and not finished."""
    in_flight: list[Work | Signal] = field(default_factory=list)
    undelivered_work: set[tuple[str, int]] = field(default_factory=set)
    announced_while_busy: bool = False

    def __post_init__(self) -> None:
        names = [f"n{i}" for i in range(self.size)]
        self.nodes = {name: TerminationDetector(name) for name in names}
        self.jobs = {name: [] for name in names}

    @property
    def root(self) -> TerminationDetector:
        return self.nodes["n0"]

    def busy(self) -> bool:
        """Ground truth: some node still works, or some work message is still to arrive."""
        return any(self.jobs.values()) or bool(self.undelivered_work)

    def emit(self, message: Work | Signal) -> None:
        self.in_flight.append(message)
        if isinstance(message, Work):
            self.undelivered_work.add((message.sender, message.msg_id))

    def step(self) -> None:
        """Deliver one random message, or let one random busy node finish one job."""
        working = [n for n, jobs in self.jobs.items() if jobs]
        if working and (not self.in_flight or self.rng.random() < 0.4):
            self.finish_job(self.rng.choice(working))
            return
        message = self.in_flight.pop(self.rng.randrange(len(self.in_flight)))
        if self.rng.random() * 100 < self.duplicate_pct:
            self.in_flight.append(message)  # delivered now, and again later
        target = self.nodes[message.recipient]
        if isinstance(message, Work):
            self.undelivered_work.discard((message.sender, message.msg_id))
            fresh, signals = target.receive(message)
            if fresh:
                self.jobs[message.recipient].append(int(message.payload.decode()))
        else:
            signals = target.acknowledge(message)
        for signal in signals:
            self.emit(signal)

    def finish_job(self, name: str) -> None:
        node = self.nodes[name]
        hops = self.jobs[name].pop(self.rng.randrange(len(self.jobs[name])))
        if hops > 0:
            for _ in range(self.rng.randint(0, 3)):
                recipient = self.rng.choice(list(self.nodes))
                self.emit(node.send(COMPUTATION, recipient, str(hops - 1).encode()))
        if not self.jobs[name]:
            for signal in node.passive(COMPUTATION):
                self.emit(signal)

    def run(self, hops: int) -> None:
        self.root.start(COMPUTATION)
        self.jobs["n0"].append(hops)
        while self.in_flight or any(self.jobs.values()):
            self.step()
            if self.root.terminated(COMPUTATION) and self.busy():
                self.announced_while_busy = True


@pytest.mark.parametrize("seed", range(500))
def test_termination_is_announced_once_everything_ends_and_never_before(seed: int) -> None:
    rng = random.Random(seed)
    run = _Run(rng, size=rng.randint(2, 10), duplicate_pct=rng.choice([0, 10, 30]))

    run.run(hops=rng.randint(0, 6))

    assert not run.announced_while_busy, f"seed {seed}: termination announced early"
    assert run.root.terminated(COMPUTATION), f"seed {seed}: termination never announced"
    assert not any(node.engaged(COMPUTATION) for node in run.nodes.values())


def test_the_engagement_tree_points_back_to_whoever_engaged_each_node() -> None:
    root, a, b = TerminationDetector("r"), TerminationDetector("a"), TerminationDetector("b")
    root.start(COMPUTATION)
    fresh, signals = a.receive(root.send(COMPUTATION, "a"))
    assert fresh
    assert signals == []
    assert a.parent(COMPUTATION) == "r"

    _, _ = b.receive(a.send(COMPUTATION, "b"))
    fresh, early = b.receive(root.send(COMPUTATION, "b"))  # b is engaged: acked at once

    assert fresh
    assert early == [Signal(COMPUTATION, "b", "r", 2)]
    assert b.parent(COMPUTATION) == "a"
    assert root.acknowledge(early[0]) == []
    assert root.passive(COMPUTATION) == []
    assert not root.terminated(COMPUTATION)  # a's subtree is still out
    to_a = b.passive(COMPUTATION)
    assert a.acknowledge(to_a[0]) == []  # a is still active
    to_root = a.passive(COMPUTATION)
    assert root.acknowledge(to_root[0]) == []
    assert root.terminated(COMPUTATION)


def test_a_late_duplicate_never_re_engages_a_node() -> None:
    root, a = TerminationDetector("r"), TerminationDetector("a")
    root.start(COMPUTATION)
    work = root.send(COMPUTATION, "a")
    a.receive(work)
    root.acknowledge(a.passive(COMPUTATION)[0])
    root.passive(COMPUTATION)

    assert a.receive(work) == (False, [])
    assert not a.engaged(COMPUTATION)
    assert root.terminated(COMPUTATION)


def test_only_an_active_node_may_send() -> None:
    node = TerminationDetector("a")
    with pytest.raises(DetectorError):
        node.send(COMPUTATION, "b")
    node.start(COMPUTATION)
    node.passive(COMPUTATION)
    with pytest.raises(DetectorError):
        node.send(COMPUTATION, "b")
