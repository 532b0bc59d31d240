"""The health sweep over a transport that delays, reorders, duplicates and loses messages,
on simulated time, over many seeds: termination is never announced while a host is still
engaged or work is still to come, and it is always announced; every host reports once."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from meshmind.bus.protocol import SweepHostReport, SweepReceipt, SweepSignal, SweepWork
from meshmind.decision import Sweeper
from tests.kit.virtual_time import VirtualTimeLoop

SEEDS = range(300)


class LossyNetwork:
    """Delivers each message after a random delay; drops and duplicates some."""

    def __init__(self, rng: random.Random, loss: float, duplicates: float) -> None:
        self.rng = rng
        self.loss = loss
        self.duplicates = duplicates
        self.hosts: dict[str, Sweeper] = {}
        self.delivered = 0
        self.in_flight: set[asyncio.Task[None]] = set()

    def deliver(
        self, recipient: str, handle: Callable[[Sweeper], Coroutine[Any, Any, None]]
    ) -> None:
        loop = asyncio.get_running_loop()
        copies = 0 if self.rng.random() < self.loss else 1
        copies += self.rng.random() < self.duplicates
        for _ in range(copies):
            delay = self.rng.uniform(0.0, 0.08)

            def arrive() -> None:
                self.delivered += 1
                task = loop.create_task(handle(self.hosts[recipient]))
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)

            loop.call_later(delay, arrive)


class Transport:
    def __init__(self, network: LossyNetwork) -> None:
        self.network = network

    async def work(self, message: SweepWork) -> None:
        self.network.deliver(message.recipient, lambda host: host.on_work(message))

    async def signal(self, message: SweepSignal) -> None:
        self.network.deliver(message.recipient, lambda host: host.on_signal(message))

    async def receipt(self, message: SweepReceipt) -> None:
        self.network.deliver(message.recipient, lambda host: host.on_receipt(message))


async def sweep_once(seed: int) -> None:
    rng = random.Random(seed)
    nodes = [f"n{i}" for i in range(1, rng.randint(1, 9) + 1)]
    network = LossyNetwork(rng, loss=rng.choice([0.0, 0.1, 0.3]), duplicates=0.2)
    checks: dict[str, int] = dict.fromkeys(nodes, 0)

    def checker(node: str) -> Callable[[], Awaitable[SweepHostReport]]:
        async def check() -> SweepHostReport:
            checks[node] += 1
            await asyncio.sleep(rng.uniform(0.0, 0.05))
            return SweepHostReport(node=node, state="good")

        return check

    for node in nodes:
        known = [n for n in nodes if n != node and rng.random() < 0.7]
        network.hosts[node] = Sweeper(
            node, Transport(network), checker(node), known.copy, retransmit_s=0.1
        )
    root = network.hosts[nodes[0]]
    result = await root.sweep(timeout_s=600)

    reached = _reachable(nodes[0], network)
    assert {r.node for r in result.reports} == reached, f"seed {seed}"
    assert all(not host.detector.engaged(result.computation) for host in network.hosts.values()), (
        f"seed {seed}: termination announced while a host is still engaged"
    )
    await asyncio.sleep(30)  # whatever is still in flight: duplicates, late receipts
    assert all(not host.detector.engaged(result.computation) for host in network.hosts.values()), (
        f"seed {seed}: a host was engaged again after termination"
    )
    assert all(checks[node] == 1 for node in reached), f"seed {seed}: {checks}"
    for host in network.hosts.values():
        await host.close()


def _reachable(root: str, network: LossyNetwork) -> set[str]:
    seen = {root}
    frontier = [root]
    while frontier:
        node = frontier.pop()
        for peer in network.hosts[node].peers():
            if peer not in seen:
                seen.add(peer)
                frontier.append(peer)
    return seen


@pytest.mark.parametrize("seed", SEEDS)
def test_a_sweep_terminates_once_and_never_early(seed: int) -> None:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        runner.run(sweep_once(seed))
