"""One job on its active coordinator: rounds (synchronous or buffered) until the last one."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from meshmind.bus import Bus, BusError, get_logger
from meshmind.bus.protocol import (
    FL_JOB_EVENTS,
    FL_METRICS,
    FL_ROUNDS,
    FlJobEvent,
    FlJobEventKind,
    FlJobSpec,
    FlJobStatus,
    FlRoundAnnouncement,
    FlRoundMetrics,
    FlUpdateReport,
)
from meshmind.federation import carried_or_fetched
from meshmind.fl import (
    AdapterBlob,
    AdapterCorrupt,
    Contribution,
    FedBuff,
    Params,
    Received,
    Strategy,
    TaskSession,
    UpdateRejected,
    aggregate_round,
    decode_adapter,
    encode_adapter,
    inline_adapter,
    make_strategy,
)
from meshmind_fl_coordinator._store import JobStore

_log = get_logger(__name__)
IDLE_RETRY_S = 1.0
"""How long to wait before selecting again when no trainer is available."""
BUFFERED_POLL_S = 1.0
"""Buffered mode hands out work at least this often, so a lost trainer's share moves on."""

Selector = Callable[[int], Awaitable[list[str]]]
"""Up to ``n`` trainers for the next piece of work, best first."""
Qualities = Callable[[Sequence[str]], dict[str, float]]
"""Each named host's link quality now."""


@dataclass
class RoundTally:
    """What one round has cost and seen so far."""

    started: float = field(default_factory=time.time)
    selected: set[str] = field(default_factory=set)
    bytes_down: int = 0
    bytes_up: int = 0
    rejected: dict[str, str] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    """Milliseconds each step took, in order (logged with the round)."""
    _last: float = field(default_factory=time.perf_counter)

    def mark(self, step: str) -> None:
        """``step`` just ended."""
        now = time.perf_counter()
        self.phases[step] = round((now - self._last) * 1000, 1)
        self._last = now


class JobRun:
    """Runs a job's remaining rounds from its checkpoint; owned by the lease holder."""

    def __init__(
        self,
        bus: Bus,
        store: JobStore,
        status: FlJobStatus,
        params: Params,
        session: TaskSession,
        *,
        select: Selector,
        qualities: Qualities,
    ) -> None:
        self.bus = bus
        self.node = bus.node_id
        self.store = store
        self.status = status
        self.spec = status.spec
        self.params = params
        self.session = session
        self.select = select
        self.qualities = qualities
        self.strategy: Strategy = make_strategy(self.spec.strategy, self.spec.proximal_mu)
        self.inbox: asyncio.Queue[FlUpdateReport] = asyncio.Queue()
        self.adapter_size = 0
        """Bytes of the global adapter each selected trainer downloads."""
        self.adapter_data: bytes | None = None
        """The global adapter, when it is small enough to go with each announcement."""
        self.hold_global(encode_adapter(params), status.sha256)
        self.log = _log.bind(job=status.job_id)

    def hold_global(self, blob: AdapterBlob, announced_sha256: str) -> None:
        """``blob`` is the global adapter now; it goes with announcements only if it is the
        one the job's status names."""
        self.adapter_size = len(blob.data)
        self.adapter_data = inline_adapter(blob) if blob.sha256 == announced_sha256 else None

    @property
    def next_round(self) -> int:
        return len(self.status.history) + 1

    @property
    def finished(self) -> bool:
        return len(self.status.history) >= self.spec.rounds

    async def run(self) -> FlJobStatus:
        """Every remaining round, then the job's last checkpoint, marked done."""
        if self.spec.mode == "buffered":
            await self.buffered()
        else:
            while not self.finished:
                if not await self.sync_round():
                    await asyncio.sleep(IDLE_RETRY_S)
        self.status = self.status.model_copy(update={"state": "done", "updated_at": time.time()})
        await self.store.save(self.status)
        best = max((m.accuracy for m in self.status.history), default=0.0)
        await self.event("done", detail=f"{len(self.status.history)} rounds, best {best:.4f}")
        return self.status

    # --- synchronous rounds ---------------------------------------------------------------

    async def sync_round(self) -> bool:
        """Announce, gather until every trainer answered or the deadline, aggregate.

        Returns whether the round counted (at least ``min_updates`` valid updates)."""
        number = self.next_round
        tally = RoundTally()
        selected = await self.select(self.spec.participants)
        if not selected:
            self.log.warning("round.no_trainers", round=number)
            return False
        tally.mark("select")
        deadline = tally.started + self.spec.deadline_s
        await self.announce(number, selected, deadline, tally)
        reports = await self.gather(number, set(selected), deadline)
        tally.mark("train")
        quality = self.qualities(selected)
        received = await self.fetch(reports, tally)
        tally.mark("fetch")
        outcome = aggregate_round(
            self.strategy,
            self.params,
            [Received(r.node, p, r.examples, quality.get(r.node, 1.0)) for r, p in received],
            link_weighting=self.spec.weighting == "link",
            max_update_norm=self.spec.max_update_norm,
        )
        tally.mark("aggregate")
        tally.rejected.update(outcome.rejected)
        await self.report_rejections(number, outcome.rejected)
        if len(outcome.weights) < self.spec.min_updates:
            detail = f"{len(outcome.weights)} valid updates by the deadline, need "
            detail += f"{self.spec.min_updates}; the round runs again"
            self.log.warning("round.short", round=number, detail=detail)
            await self.event("rejected", number, detail)
            return False
        examples = {r.node: r.examples for r, _ in received if r.node in outcome.weights}
        await self.commit(
            number,
            outcome.params,
            tally,
            weights=outcome.weights,
            quality={node: quality.get(node, 1.0) for node in outcome.weights},
            examples=examples,
        )
        return True

    async def announce(
        self, number: int, trainers: Sequence[str], deadline: float, tally: RoundTally
    ) -> None:
        announcement = FlRoundAnnouncement(
            job_id=self.status.job_id,
            coordinator=self.node,
            round=number,
            version=self.status.version,
            task=self.spec.task,
            adapter=self.status.adapter,
            sha256=self.status.sha256,
            adapter_data=self.adapter_data,
            deadline=deadline,
            trainers=list(trainers),
            epochs=self.spec.epochs,
            lr=self.spec.lr,
            proximal_mu=self.strategy.proximal_mu,
            seed=self.spec.seed,
            label_skew=self.spec.label_skew,
            max_update_norm=self.spec.max_update_norm,
        )
        await self.bus.publish(FL_ROUNDS, announcement, coordinator=self.node)
        tally.selected.update(trainers)
        tally.bytes_down += self.adapter_size * len(trainers)

    async def gather(
        self, number: int, selected: set[str], deadline: float
    ) -> list[FlUpdateReport]:
        """This round's reports from the selected trainers, until all are in or time is up."""
        reports: dict[str, FlUpdateReport] = {}
        while len(reports) < len(selected):
            remaining = deadline - time.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):  # wait_for can swallow a cancel (3.11)
                    report = await self.inbox.get()
            except TimeoutError:
                break
            if (
                report.round == number
                and report.base_version == self.status.version
                and report.node in selected
            ):
                reports[report.node] = report
        missing = sorted(selected - set(reports))
        if missing:
            self.log.info("round.deadline", round=number, missing=missing)
        return list(reports.values())

    async def fetch(
        self, reports: Sequence[FlUpdateReport], tally: RoundTally
    ) -> list[tuple[FlUpdateReport, Params]]:
        """Each report's parameters, carried or from the store, checked against its digest."""
        results = await asyncio.gather(*(self.fetch_one(r, tally) for r in reports))
        return [(report, params) for report, params in results if params is not None]

    async def fetch_one(
        self, report: FlUpdateReport, tally: RoundTally
    ) -> tuple[FlUpdateReport, Params | None]:
        try:
            data = await carried_or_fetched(
                report.adapter_data, report.sha256, report.adapter, self.store.get
            )
            params = decode_adapter(data, report.sha256)
        except (BusError, KeyError, AdapterCorrupt) as error:
            tally.rejected[report.node] = f"update not readable: {error}"
            return report, None
        tally.bytes_up += len(data)
        return report, params

    async def report_rejections(self, number: int, rejected: dict[str, str]) -> None:
        for node, reason in rejected.items():
            self.log.warning("update.rejected", round=number, node=node, reason=reason)
            await self.event("rejected", number, f"{node}: {reason}")

    async def commit(
        self,
        number: int,
        params: Params,
        tally: RoundTally,
        *,
        weights: dict[str, float],
        quality: dict[str, float],
        examples: dict[str, int],
        staleness: dict[str, int] | None = None,
    ) -> None:
        """Store the new global adapter, evaluate it, checkpoint, and tell the mesh."""
        version = self.status.version + 1
        blob = encode_adapter(params)
        name, evaluation = await asyncio.gather(
            self.store.put_global(self.status.job_id, version, blob.data),
            asyncio.to_thread(self.session.evaluate, params),
        )
        tally.mark("store_evaluate")
        now = time.time()
        metrics = FlRoundMetrics(
            job_id=self.status.job_id,
            coordinator=self.node,
            round=number,
            version=version,
            accuracy=evaluation["accuracy"],
            loss=evaluation["loss"] if math.isfinite(evaluation["loss"]) else 1e9,
            participants=sorted(weights),
            weights=weights,
            link_quality=quality,
            examples=examples,
            staleness=staleness or {},
            rejected=tally.rejected,
            selected=sorted(tally.selected),
            bytes_down=tally.bytes_down,
            bytes_up=tally.bytes_up,
            wall_s=now - tally.started,
            at=now,
        )
        self.params = params
        self.hold_global(blob, blob.sha256)
        self.status = self.status.model_copy(
            update={
                "version": version,
                "adapter": name,
                "sha256": blob.sha256,
                "history": [*self.status.history, metrics],
                "coordinator": self.node,
                "updated_at": now,
            }
        )
        await self.store.save(self.status)
        tally.mark("checkpoint")
        self.log.info(
            "round.done",
            round=number,
            accuracy=round(metrics.accuracy, 4),
            participants=len(weights),
            wall_s=round(metrics.wall_s, 2),
            phases_ms=tally.phases,
        )
        try:
            await self.bus.publish(FL_METRICS, metrics, coordinator=self.node)
        except BusError as error:  # the checkpoint keeps them; only the event is lost
            self.log.warning("metrics.not_published", error=str(error))
        await self.event("round", number, f"accuracy {metrics.accuracy:.4f}")

    async def event(self, kind: FlJobEventKind, number: int = 0, detail: str = "") -> None:
        event = FlJobEvent(
            job_id=self.status.job_id,
            node=self.node,
            kind=kind,
            round=number,
            detail=detail[:1024],
            at=time.time(),
        )
        try:
            await self.bus.publish(FL_JOB_EVENTS, event, node=self.node)
        except BusError as error:
            self.log.warning("event.not_published", kind=kind, error=str(error))

    # --- buffered asynchronous aggregation (FedBuff) ----------------------------------------

    async def buffered(self) -> None:
        """Trainers work from whichever version they last got and report when done; every
        ``buffer_size`` valid updates make a new version, stale ones discounted. Nobody waits
        for a slow trainer; one silent past the deadline is given new work when selected."""
        spec = self.spec
        buffer_size = spec.buffer_size or max(1, math.ceil(spec.participants / 2))
        base = self.status.version
        fedbuff = FedBuff(
            self.params,
            buffer_size=buffer_size,
            max_staleness=spec.max_staleness,
            strategy=self.strategy,
            max_update_norm=spec.max_update_norm,
            remember=spec.remember,
        )
        working: dict[str, float] = {}
        # Trainers whose update waits in the buffer get the next version, not the same again;
        # unless nobody else can fill the buffer.
        buffered: set[str] = set()
        tally = RoundTally()
        examples: dict[str, int] = {}
        while not self.finished:
            now = time.time()
            for node in [n for n, deadline in working.items() if deadline < now]:
                del working[node]
            selected = await self.select(spec.participants)
            if not working and set(selected) <= buffered:
                buffered.clear()
            idle = [n for n in selected if n not in working and n not in buffered]
            if idle:
                deadline = now + spec.deadline_s
                await self.announce(self.next_round, idle, deadline, tally)
                working.update(dict.fromkeys(idle, deadline))
            try:
                async with asyncio.timeout(BUFFERED_POLL_S):
                    report = await self.inbox.get()
            except TimeoutError:
                continue
            if report.node not in working or report.base_version > self.status.version:
                continue
            del working[report.node]
            fetched = await self.fetch_one(report, tally)
            if fetched[1] is None:
                continue
            link = self.qualities([report.node]).get(report.node, 1.0)
            contribution = Contribution(
                node=report.node,
                params=fetched[1],
                examples=max(report.examples, 1),
                base_version=report.base_version - base,
                link_quality=link if spec.weighting == "link" else 1.0,
            )
            try:
                if contribution.base_version < 0:
                    raise UpdateRejected(f"{report.node}: trained before this coordinator")
                aggregation = fedbuff.submit(contribution)
            except UpdateRejected as rejection:
                tally.rejected[report.node] = rejection.reason
                await self.report_rejections(self.next_round, {report.node: rejection.reason})
                continue
            examples[report.node] = report.examples
            buffered.add(report.node)
            if aggregation is None:
                continue
            buffered.clear()
            weights: dict[str, float] = {}
            staleness: dict[str, int] = {}
            for node, weight, stale in zip(
                aggregation.nodes, aggregation.weights, aggregation.staleness, strict=True
            ):
                weights[node] = weights.get(node, 0.0) + weight
                staleness[node] = max(staleness.get(node, 0), stale)
            await self.commit(
                self.next_round,
                aggregation.params,
                tally,
                weights=weights,
                quality=self.qualities(list(weights)),
                examples={node: examples.get(node, 0) for node in weights},
                staleness=staleness,
            )
            tally = RoundTally()
            examples = {}


async def new_job(
    store: JobStore, spec: FlJobSpec, job_id: str, node: str, session: TaskSession
) -> tuple[FlJobStatus, Params]:
    """A job's first checkpoint: its global adapter version 0, evaluated before any round."""
    params = session.initial
    blob = encode_adapter(params)
    name = await store.put_global(job_id, 0, blob.data)
    evaluation = await asyncio.to_thread(session.evaluate, params)
    now = time.time()
    status = FlJobStatus(
        job_id=job_id,
        spec=spec.model_copy(update={"job_id": job_id}),
        state="running",
        coordinator=node,
        version=0,
        adapter=name,
        sha256=blob.sha256,
        initial_accuracy=evaluation["accuracy"],
        history=[],
        started_at=now,
        updated_at=now,
    )
    await store.save(status)
    return status, params


async def resumed_params(store: JobStore, status: FlJobStatus) -> Params:
    """The global adapter a checkpoint names, checked against its digest."""
    return decode_adapter(await store.get(status.adapter), status.sha256)
