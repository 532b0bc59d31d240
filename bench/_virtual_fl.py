"""Link-aware FL replayed on a virtual clock, in one process, for every choice of slow hosts.

The lab's comparison puts two given hosts behind slow links. Under a strong label skew, which
two decides the outcome, so this replays both jobs for every pair: the digits task and
:class:`FedBuff` as the coordinator runs them, the trainers' timings as measured on the lab.
"""

from __future__ import annotations

import heapq
import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from meshmind.bus.protocol import FlJobSpec
from meshmind.federation import HostData
from meshmind.fl import (
    Contribution,
    FedBuff,
    Params,
    TaskSession,
    UpdateRejected,
    make_strategy,
)


@dataclass(frozen=True)
class Timing:
    """What the lab measured: each trainer's cycle from work sent to update in, and the
    score of a slow host's link."""

    fast_cycle_s: float
    slow_cycle_s: float
    slow_link_quality: float


@dataclass(frozen=True)
class PairOutcome:
    """The link-aware job with ``slow`` behind slow links, against synchronous FedAvg."""

    slow: tuple[int, ...]
    time_to_target_s: float | None
    final_accuracy: float

    def ratio(self, sync_s: float) -> float:
        """Time to target over synchronous FedAvg's; infinite if never reached."""
        return float("inf") if self.time_to_target_s is None else self.time_to_target_s / sync_s


def buffered_timeline(
    sessions: Sequence[TaskSession],
    slow: set[int],
    timing: Timing,
    spec: FlJobSpec,
) -> list[tuple[float, float]]:
    """(seconds, accuracy) of each global version of the buffered job ``spec`` (which sets
    its buffer size): trainers get the newest version when idle, and one whose update waits
    in the buffer waits for the next version, as the coordinator has it."""
    if spec.buffer_size is None:
        raise ValueError("the replayed job must set its buffer_size")
    fedbuff = FedBuff(
        sessions[0].initial,
        buffer_size=spec.buffer_size,
        max_staleness=spec.max_staleness,
        strategy=make_strategy(spec.strategy, spec.proximal_mu),
        max_update_norm=spec.max_update_norm,
        remember=spec.remember,
    )
    order = itertools.count()
    arrivals: list[tuple[float, int, int, int, Params]] = []

    def send(host: int, now: float) -> None:
        cycle = timing.slow_cycle_s if host in slow else timing.fast_cycle_s
        heapq.heappush(arrivals, (now + cycle, next(order), host, fedbuff.version, fedbuff.params))

    for host in range(len(sessions)):
        send(host, 0.0)
    waiting: list[int] = []
    timeline = [(0.0, sessions[0].evaluate(fedbuff.params)["accuracy"])]
    while fedbuff.version < spec.rounds:
        if not arrivals:  # nobody else can fill the buffer: the waiting get the same again
            for host in waiting:
                send(host, timeline[-1][0])
            waiting.clear()
        now, _, host, base, params = heapq.heappop(arrivals)
        trained, result = sessions[host].train(
            params, epochs=spec.epochs, lr=spec.lr, proximal_mu=fedbuff.strategy.proximal_mu
        )
        linked = host in slow and spec.weighting == "link"
        quality = timing.slow_link_quality if linked else 1.0
        try:
            aggregation = fedbuff.submit(
                Contribution(f"n{host + 1}", trained, result.examples, base, quality)
            )
        except UpdateRejected:
            send(host, now)
            continue
        waiting.append(host)
        if aggregation is not None:
            timeline.append((now, sessions[0].evaluate(fedbuff.params)["accuracy"]))
            for idle in waiting:
                send(idle, now)
            waiting.clear()
    return timeline


def time_to(timeline: Sequence[tuple[float, float]], target: float) -> float | None:
    """The first time ``timeline`` is at ``target`` accuracy or above."""
    return next((at for at, accuracy in timeline if accuracy >= target), None)


def slow_pairs(timing: Timing, spec: FlJobSpec, target: float) -> list[PairOutcome]:
    """The buffered job ``spec`` on its ``participants`` hosts, for every pair of slow hosts."""
    hosts = spec.participants
    sessions = [
        TaskSession(spec.task, spec.seed, HostData(i, hosts), spec.label_skew) for i in range(hosts)
    ]
    outcomes = []
    for pair in itertools.combinations(range(hosts), 2):
        timeline = buffered_timeline(sessions, set(pair), timing, spec)
        outcomes.append(PairOutcome(pair, time_to(timeline, target), timeline[-1][1]))
    return outcomes


def median_ratio(outcomes: Sequence[PairOutcome], sync_s: float) -> float:
    """The median over pairs of the time to target over synchronous FedAvg's."""
    return statistics.median(outcome.ratio(sync_s) for outcome in outcomes)
