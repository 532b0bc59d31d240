"""fl-coordinator's wiring: start and status endpoints, the lease per job, standby takeover."""

from __future__ import annotations

import asyncio
import importlib
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from meshmind import __version__
from meshmind.bus import Bus, BusError, ServiceError, ServiceKit, background, get_logger, run
from meshmind.bus.protocol import (
    CONSENSUS_GET,
    DISCOVERY_PEERS,
    FL_COORDINATOR_SERVICE,
    FL_JOB_EVENTS,
    FL_START,
    FL_STATUS,
    FL_STORE,
    FL_TRAINER_SERVICE,
    FL_UPDATES,
    LINK_CHANGES,
    FlJobEvent,
    FlJobList,
    FlJobQuery,
    FlJobSpec,
    FlJobStatus,
    FlUpdateReport,
    JobState,
    KvKey,
    LinkChange,
    PeerQuery,
)
from meshmind.federation import (
    Candidate,
    HostData,
    MeasuredLink,
    exclusion_key,
    link_qualities,
    select_trainers,
)
from meshmind.health import read_links
from meshmind_fl_coordinator._config import CoordinatorSettings
from meshmind_fl_coordinator._lease import Lease, LeaseLost
from meshmind_fl_coordinator._store import JobStore

if TYPE_CHECKING:  # torch and the tasks load with the first job, not with the service
    from meshmind.fl import Params, TaskSession
    from meshmind_fl_coordinator._job import JobRun

_log = get_logger(__name__)
STORE_RETRY_S = 1.0
RESCAN_EVERY = 10
"""A standby lists the store's checkpoints every this many checks, for jobs it missed."""
DISCOVERY_TIMEOUT_S = 3.0
LINKS_REREAD_S = 5.0
"""How often the whole ``mesh-links`` bucket is read again (link events arrive in between)."""
HUB_READ_TIMEOUT_S = 3.0
CONSENSUS_READ_TIMEOUT_S = 3.0


async def load_learning() -> None:
    """Import torch and the tasks off the event loop: that takes seconds, once, and a job's
    lease must go on being renewed meanwhile."""
    await asyncio.to_thread(importlib.import_module, "meshmind_fl_coordinator._job")


class Coordinator:
    """This host's coordinator: active for the jobs whose lease it holds, standby for others."""

    def __init__(self, bus: Bus, settings: CoordinatorSettings) -> None:
        self.bus = bus
        self.node = bus.node_id
        self.settings = settings
        self.data: HostData = settings.host_data(self.node)
        self.store: JobStore | None = None
        self.known: dict[str, JobState] = {}
        self.active: dict[str, JobRun] = {}
        self.drivers: dict[str, asyncio.Task[None]] = {}
        self.sessions: dict[tuple[str, int, float | None], TaskSession] = {}
        self.links: dict[tuple[str, str], MeasuredLink] = {}
        self.candidates: list[Candidate] = []
        self.excluded: frozenset[str] = frozenset()
        """The hosts the consensus store kept out of training at the last selection."""
        self.links_read_at = -LINKS_REREAD_S
        self.tasks: list[asyncio.Task[None]] = []

    # --- the mesh around a job: store, trainers, links ------------------------------------

    async def job_store(self) -> JobStore:
        while self.store is None:
            try:
                self.store = JobStore(await self.bus.hub().object_store(FL_STORE))
            except BusError as error:
                _log.warning("store.unavailable", error=str(error))
                await asyncio.sleep(STORE_RETRY_S)
        return self.store

    async def select(self, count: int) -> list[str]:
        """The best ``count`` trainers now: from discovery (capability, load) and links, less
        the hosts the consensus store excludes. The exclusions of the hosts already known are
        read while discovery answers; those of a host new to its view, after."""
        known = [c.node for c in self.candidates]
        _, excluded = await asyncio.gather(self.refresh_candidates(), self.exclusions(known))
        nodes = [c.node for c in self.candidates]
        unread = [node for node in nodes if node not in known]
        if unread:
            excluded |= await self.exclusions(unread)
        excluded &= frozenset(nodes)
        if excluded != self.excluded:
            _log.info("exclusions.changed", excluded=sorted(excluded))
        self.excluded = excluded
        return select_trainers(self.candidates, count, self.qualities(nodes), excluded)

    async def refresh_candidates(self) -> None:
        """Discovery's trainers now, and the link table when it is due for a full read."""
        try:
            view = await self.bus.request(
                DISCOVERY_PEERS,
                PeerQuery(capability=self.settings.capability),
                timeout=DISCOVERY_TIMEOUT_S,
                node=self.node,
            )
            self.candidates = [
                Candidate(p.node, p.load.cpu_pct)
                for p in view.peers
                if FL_TRAINER_SERVICE in p.services
            ]
        except BusError as error:  # the last view serves until discovery answers again
            _log.warning("discovery.unanswered", error=str(error))
        if time.monotonic() - self.links_read_at >= LINKS_REREAD_S:
            self.links_read_at = time.monotonic()
            try:  # between reads, the health monitors' link events keep the table current
                async with asyncio.timeout(HUB_READ_TIMEOUT_S):
                    checked = await read_links(self.bus)
                for report in checked.accepted:
                    self.on_link_report(report.source, report.target, report.score)
            except (BusError, TimeoutError) as error:
                _log.info("links.unread", error=str(error) or "timeout")

    async def exclusions(self, nodes: Sequence[str]) -> frozenset[str]:
        """The hosts among ``nodes`` excluded from training now (``fl/excluded/<node>`` in the
        consensus store), read at every selection: a round chosen after an exclusion was
        committed leaves the host out. While consensus does not answer, the last answer."""
        try:
            entries = await asyncio.gather(
                *(
                    self.bus.request(
                        CONSENSUS_GET,
                        KvKey(key=exclusion_key(node)),
                        timeout=CONSENSUS_READ_TIMEOUT_S,
                        node=self.node,
                    )
                    for node in nodes
                )
            )
        except BusError as error:
            _log.info("exclusions.unread", error=str(error))
            return self.excluded & frozenset(nodes)
        return frozenset(n for n, e in zip(nodes, entries, strict=True) if e.value is not None)

    def qualities(self, nodes: Sequence[str]) -> dict[str, float]:
        return link_qualities(self.links.values(), nodes)

    def on_link_report(self, source: str, target: str, score: float) -> None:
        self.links[(source, target)] = MeasuredLink(source, target, score)

    async def on_link_change(self, change: LinkChange) -> None:
        self.on_link_report(change.link.source, change.link.target, change.link.score)

    async def on_update(self, report: FlUpdateReport) -> None:
        job = self.active.get(report.job_id)
        if job is not None:
            job.inbox.put_nowait(report)

    async def on_job_event(self, event: FlJobEvent) -> None:
        if event.kind in ("done", "failed"):
            self.known[event.job_id] = "done" if event.kind == "done" else "failed"
        elif event.kind in ("started", "resumed"):
            self.known[event.job_id] = "running"
        else:
            self.known.setdefault(event.job_id, "running")

    def session(self, spec: FlJobSpec) -> TaskSession:
        """The job's task model on this host (built once; the first call loads torch)."""
        from meshmind.fl import TaskSession

        key = (spec.task, spec.seed, spec.label_skew)
        if key not in self.sessions:
            self.sessions[key] = TaskSession(spec.task, spec.seed, self.data, spec.label_skew)
        return self.sessions[key]

    # --- endpoints ---------------------------------------------------------------------------

    async def start_job(self, spec: FlJobSpec) -> FlJobStatus:
        """Checkpoint a new job and run it here, holding its lease."""
        await load_learning()
        from meshmind.fl import task_names
        from meshmind_fl_coordinator._job import new_job

        if spec.task not in task_names():
            raise ServiceError(400, f"unknown task {spec.task!r}; known: {task_names()}")
        if spec.min_updates > spec.participants:
            raise ServiceError(400, "min_updates cannot exceed participants")
        job_id = spec.job_id or f"job-{secrets.token_hex(4)}"
        store = await self.job_store()
        lease = Lease(self.bus, job_id, self.settings.lease_ttl_s)
        try:
            if await store.load(job_id) is not None:
                raise ServiceError(409, f"job {job_id} exists")
            if not await lease.ask("grant"):
                raise ServiceError(503, f"cannot take the lease of job {job_id} now")
            try:
                session = await lease.holding(
                    asyncio.to_thread(self.session, spec), self.settings.renew_s
                )
            except ValueError as error:
                await lease.ask("release")
                raise ServiceError(400, str(error)) from None
            except LeaseLost:
                raise ServiceError(503, f"lost the lease of job {job_id} while loading") from None
            status, params = await new_job(store, spec, job_id, self.node, session)
        except ServiceError:
            raise
        except BusError as error:  # the hub or consensus did not answer: nothing started
            await lease.ask("release")
            raise ServiceError(503, f"job {job_id} not started, try again: {error}") from None
        self.launch(status, session, params, lease, "started")
        return status

    async def job_status(self, query: FlJobQuery) -> FlJobList:
        store = await self.job_store()
        ids = [query.job_id] if query.job_id else await store.job_ids()
        found = [s for s in await asyncio.gather(*(store.load(i) for i in ids)) if s is not None]
        if query.job_id and not found:
            raise ServiceError(404, f"no job {query.job_id}")
        return FlJobList(jobs=sorted(found, key=lambda s: s.started_at, reverse=True))

    # --- running a job while holding its lease ---------------------------------------------

    def launch(
        self, status: FlJobStatus, session: TaskSession, params: Params, lease: Lease, how: str
    ) -> None:
        from meshmind_fl_coordinator._job import JobRun

        job = JobRun(
            self.bus,
            self.store_now(),
            status,
            params,
            session,
            select=self.select,
            qualities=self.qualities,
        )
        self.active[status.job_id] = job
        self.known[status.job_id] = "running"
        self.drivers[status.job_id] = asyncio.create_task(self.drive(job, lease, how))

    def store_now(self) -> JobStore:
        if self.store is None:
            raise RuntimeError("the store is bound before a job runs")
        return self.store

    async def drive(self, job: JobRun, lease: Lease, how: str) -> None:
        """Run the job while the lease is renewed; stop at once when it is lost."""
        job_id = job.status.job_id
        await job.event("started" if how == "started" else "resumed", job.next_round)
        runner = asyncio.create_task(job.run())
        keeper = asyncio.create_task(self.keep(lease, runner))
        try:
            status = await runner
            self.known[job_id] = status.state
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                runner.cancel()
                raise
            _log.warning("job.lease_lost", job=job_id, round=job.next_round)
        except Exception:  # a standby (or this host) resumes it from the checkpoint
            _log.exception("job.failed_here", job=job_id, round=job.next_round)
        finally:
            keeper.cancel()
            self.active.pop(job_id, None)
            self.drivers.pop(job_id, None)
            await lease.ask("release")

    async def keep(self, lease: Lease, runner: asyncio.Task[FlJobStatus]) -> None:
        """Renew the lease; cancel the job once it has not been confirmed for a whole TTL."""
        confirmed = time.monotonic()
        while not runner.done():
            await asyncio.sleep(self.settings.renew_s)
            if await lease.ask("renew"):
                confirmed = time.monotonic()
            elif time.monotonic() - confirmed > self.settings.lease_ttl_s - self.settings.renew_s:
                runner.cancel()
                return

    # --- standby -----------------------------------------------------------------------------

    async def standby(self) -> None:
        """Take over the running jobs whose coordinator's lease expired, from their checkpoint."""
        checks = 0
        while True:
            if checks % RESCAN_EVERY == 0:
                await self.rescan()
            checks += 1
            for job_id, state in list(self.known.items()):
                if state == "running" and job_id not in self.active:
                    await self.try_resume(job_id)
            await asyncio.sleep(self.settings.standby_check_s)

    async def rescan(self) -> None:
        store = await self.job_store()
        try:
            for job_id in await store.job_ids():
                if job_id not in self.known:
                    status = await store.load(job_id)
                    if status is not None:
                        self.known[job_id] = status.state
        except BusError as error:
            _log.info("store.rescan_failed", error=str(error))

    async def try_resume(self, job_id: str) -> None:
        lease = Lease(self.bus, job_id, self.settings.lease_ttl_s)
        if not await lease.ask("grant"):
            return
        try:
            found = await lease.holding(self.resumable(job_id), self.settings.renew_s)
        except LeaseLost:
            _log.warning("job.lease_lost", job=job_id)
            return
        if found is None:
            await lease.ask("release")
            return
        store, status, session, params = found
        status = status.model_copy(
            update={"coordinator": self.node, "takeovers": status.takeovers + 1}
        )
        await store.save(status)
        _log.info("job.resumed", job=job_id, version=status.version)
        self.launch(status, session, params, lease, "resumed")

    async def resumable(
        self, job_id: str
    ) -> tuple[JobStore, FlJobStatus, TaskSession, Params] | None:
        """What resuming the job takes (torch loaded first), or ``None`` if it has ended or its
        checkpoint cannot be read."""
        await load_learning()
        from meshmind.fl import AdapterCorrupt
        from meshmind_fl_coordinator._job import resumed_params

        try:
            store = await self.job_store()
            status = await store.load(job_id)
            if status is None or status.state != "running":
                self.known[job_id] = "done" if status is None else status.state
                return None
            params = await resumed_params(store, status)
            session = await asyncio.to_thread(self.session, status.spec)
        except (BusError, KeyError, AdapterCorrupt) as error:
            _log.warning("job.resume_failed", job=job_id, error=str(error))
            return None
        return store, status, session, params

    async def close(self) -> None:
        for task in [*self.tasks, *self.drivers.values()]:
            task.cancel()
        await asyncio.gather(*self.tasks, *self.drivers.values(), return_exceptions=True)


async def setup(bus: Bus, kit: ServiceKit) -> Callable[[], Awaitable[None]]:
    """Declare the endpoints, follow updates, links and job events, and stand by."""
    coordinator = Coordinator(bus, CoordinatorSettings())
    kit.endpoint(FL_START, coordinator.start_job, node=bus.node_id)
    kit.endpoint(FL_STATUS, coordinator.job_status, node=bus.node_id)
    await kit.subscribe(FL_UPDATES, coordinator.on_update)
    await kit.subscribe(FL_JOB_EVENTS, coordinator.on_job_event)
    await kit.subscribe(LINK_CHANGES, coordinator.on_link_change)
    coordinator.tasks = [background(coordinator.standby, "standby")]
    return coordinator.close


def main() -> None:
    """Run the coordinator until SIGTERM."""
    run(
        FL_COORDINATOR_SERVICE,
        __version__,
        setup,
        description="Federated learning jobs: rounds, aggregation, checkpoints.",
    )
