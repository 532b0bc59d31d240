"""fl-trainer's wiring: take the rounds that name this host, train, upload, report."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from meshmind import __version__
from meshmind.bus import Bus, BusError, ObjectStore, ServiceKit, background, get_logger, run
from meshmind.bus.protocol import (
    FL_ROUNDS,
    FL_STORE,
    FL_TRAINER_SERVICE,
    FL_UPDATES,
    FlRoundAnnouncement,
    FlUpdateReport,
)
from meshmind.federation import HostData, carried_or_fetched, update_object
from meshmind_fl_trainer._config import TrainerSettings

if TYPE_CHECKING:  # torch and the tasks load in setup (preload) or with the first round
    from meshmind_fl_trainer._work import Workbench

_log = get_logger(__name__)
STORE_RETRY_S = 1.0
STORE_TIMEOUT_S = 30.0
"""Fetching the global adapter or uploading an update may take this long."""


class Trainer:
    """This host's trainer: one piece of work at a time, the newest per job."""

    def __init__(self, bus: Bus, settings: TrainerSettings) -> None:
        self.bus = bus
        self.node = bus.node_id
        self.settings = settings
        self.data: HostData = settings.host_data(self.node)
        self.work: dict[str, FlRoundAnnouncement] = {}
        self.wake = asyncio.Event()
        self.bench: Workbench | None = None
        self.store: ObjectStore | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.records: set[asyncio.Task[None]] = set()
        """Updates on their way to the store after their report (:meth:`record`)."""

    async def on_round(self, announcement: FlRoundAnnouncement) -> None:
        """Queue a round that names this host; a newer one of the same job replaces it."""
        if self.node not in announcement.trainers:
            return
        self.work.pop(announcement.job_id, None)
        self.work[announcement.job_id] = announcement
        self.wake.set()

    async def serve(self) -> None:
        """Train what is queued, oldest job first; sit idle while nothing is."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.work:
                job_id = next(iter(self.work))
                announcement = self.work.pop(job_id)
                if announcement.deadline < time.time():
                    _log.info("round.too_late", job=job_id, round=announcement.round)
                    continue
                await self.train(announcement)

    async def hub_store(self) -> ObjectStore:
        while self.store is None:
            try:
                self.store = await self.bus.hub().object_store(FL_STORE)
            except BusError as error:
                _log.warning("store.unavailable", error=str(error))
                await asyncio.sleep(STORE_RETRY_S)
        return self.store

    async def workbench(self) -> Workbench:
        """The bench; the first call loads torch and the tasks (off the event loop)."""
        if self.bench is None:

            def build() -> Workbench:
                from meshmind_fl_trainer._work import Workbench

                return Workbench(self.data, self.settings.fault)

            self.bench = await asyncio.to_thread(build)
        return self.bench

    async def train(self, work: FlRoundAnnouncement) -> None:
        """Fetch the global adapter, train on local data, check, report and upload."""
        from meshmind_fl_trainer._work import Withheld

        log = _log.bind(job=work.job_id, round=work.round, version=work.version)
        store = await self.hub_store()
        bench = await self.workbench()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                adapter = await global_adapter(work, store.get)
            fetched = time.perf_counter()
            trained = await asyncio.to_thread(bench.train, work, adapter)
            done = time.perf_counter()
        except (BusError, KeyError, TimeoutError, Withheld) as error:
            log.warning("update.withheld", reason=str(error))
            return
        name = update_object(work.job_id, work.round, work.version, self.node)
        carried = trained.carried
        report = FlUpdateReport(
            job_id=work.job_id,
            node=self.node,
            round=work.round,
            base_version=work.version,
            adapter=name,
            sha256=trained.sha256,
            adapter_data=carried,
            size=len(trained.data),
            examples=trained.examples,
            loss=trained.loss,
            metrics=trained.metrics,
        )
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                if carried is None:  # the coordinator reads it from the store: put it first
                    await store.put(name, trained.data)
                await self.bus.publish(FL_UPDATES, report, node=self.node)
        except (BusError, TimeoutError) as error:
            log.warning("update.not_sent", error=str(error))
            return
        sent = time.perf_counter()
        if carried is not None:
            self.record(store, name, trained.data)
        phases = {"fetch": fetched - started, "train": done - fetched, "report": sent - done}
        log.info(
            "update.sent",
            examples=trained.examples,
            loss=round(trained.loss, 4),
            carried=carried is not None,
            phases_ms={step: round(s * 1000, 1) for step, s in phases.items()},
        )

    def record(self, store: ObjectStore, name: str, data: bytes) -> None:
        """Put an update its report already carried into the store, in the background: the
        store's copy is the record, and neither the coordinator nor the next work waits on it
        (behind a slow link, a put takes round trips the report does not)."""

        async def put() -> None:
            try:
                async with asyncio.timeout(STORE_TIMEOUT_S):
                    await store.put(name, data)
            except (BusError, TimeoutError) as error:
                _log.warning("update.not_stored", object=name, error=str(error))

        task = background(put, "record-update")
        self.records.add(task)
        task.add_done_callback(self.records.discard)

    async def close(self) -> None:
        tasks = [*self.tasks, *self.records]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def global_adapter(
    work: FlRoundAnnouncement, fetch: Callable[[str], Awaitable[bytes]]
) -> bytes:
    """The round's global adapter: the announcement's own copy when it carries one that
    matches its digest, else fetched from the store."""
    return await carried_or_fetched(work.adapter_data, work.sha256, work.adapter, fetch)


async def setup(bus: Bus, kit: ServiceKit) -> Callable[[], Awaitable[None]]:
    """Follow every coordinator's rounds and start the training loop; with preloading, only
    once torch and the tasks are loaded, so the service (which coordinators select trainers
    by) is offered only when it can train at once."""
    trainer = Trainer(bus, TrainerSettings())
    if trainer.settings.preload:
        await trainer.workbench()
    await kit.subscribe(FL_ROUNDS, trainer.on_round)
    trainer.tasks = [background(trainer.serve, "train")]
    _log.info(
        "trainer.ready",
        node_index=trainer.data.node_index,
        nodes=trainer.data.nodes,
        fault=trainer.settings.fault,
    )
    return trainer.close


def main() -> None:
    """Run the trainer until SIGTERM."""
    run(FL_TRAINER_SERVICE, __version__, setup, description="Federated LoRA training.")
