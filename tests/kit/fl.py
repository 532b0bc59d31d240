"""A lab whose hosts train federated jobs, and a client that starts jobs and follows them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from meshmind.bus import Bus, BusError, BusSettings, ServiceError
from meshmind.bus.protocol import (
    FL_COORDINATOR_SERVICE,
    FL_START,
    FL_STATUS,
    FL_TRAINER_SERVICE,
    FlJobQuery,
    FlJobSpec,
    FlJobStatus,
    FlRoundMetrics,
)
from meshmind.federation import HostData
from meshmind.fl import Received, TaskSession, aggregate_round, make_strategy
from meshmind.lab import LocalMesh, ServiceCommand, host_services
from tests.kit.recorder import Recorder
from tests.kit.waiting import eventually, request_when_served

SERVICES = Path(__file__).resolve().parents[2] / "services"
SOURCES = [SERVICES / name for name in ("consensus", "fl-trainer", "fl-coordinator", "decision")]
"""Service source trees the lab's processes import, even before a reinstall."""
LAB_MODULES = (
    "meshmind_discovery",
    "meshmind_health_monitor",
    "meshmind_consensus",
    "meshmind_fl_trainer",
    "meshmind_fl_coordinator",
)
TRAINER = "meshmind_fl_trainer"


def fl_env(**extra: str) -> dict[str, str]:
    """The environment of the lab's services: sources importable, quick lease hand-over."""
    path = os.pathsep.join([*map(str, SOURCES), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {"PYTHONPATH": path, "LOG_LEVEL": "info", "FL_LEASE_TTL_S": "4", **extra}


def faulty_trainer(faults: dict[str, str]) -> ServiceCommand:
    """The trainer, started with ``FL_TRAINER_FAULT`` set on the hosts ``faults`` names."""
    cases = " ".join(f"{node}) export FL_TRAINER_FAULT={fault};;" for node, fault in faults.items())
    script = f'case "$NODE_ID" in {cases} *) ;; esac; exec "{sys.executable}" -m {TRAINER}'
    return ServiceCommand(TRAINER, ["/bin/sh", "-c", script], {})


@contextlib.asynccontextmanager
async def fl_lab(
    run_dir: Path,
    nodes: Sequence[str],
    *,
    faults: dict[str, str] | None = None,
    modules: Sequence[str] = LAB_MODULES,
    **env: str,
) -> AsyncIterator[tuple[LocalMesh, Bus]]:
    """A started mesh running ``modules`` on every host (discovery, health, consensus and
    both FL services unless told), and an operator's bus on its hub; returns once every
    trainer and coordinator runs."""
    services = []
    for command in host_services(nodes, run_dir):
        if command.name not in modules:
            continue
        if command.name == TRAINER and faults:
            command = ServiceCommand(TRAINER, faulty_trainer(faults).argv, command.env)
        services.append(command)
    mesh = LocalMesh(run_dir, nodes, services=services, service_env=fl_env(**env))
    try:
        await mesh.start(timeout=60)
        bus = await Bus.connect(BusSettings(node_id="observer", nats_url=mesh.hub_url), name="t")
        try:
            await wait_for_services(bus, len(nodes))
            yield mesh, bus
        finally:
            await bus.close()
    finally:
        await mesh.stop()


async def wait_for_services(bus: Bus, count: int, *, within: float = 300.0) -> None:
    """Until ``count`` trainers and coordinators answer ``$SRV.PING``."""

    async def all_up() -> bool:
        replies = await bus.gather_raw("$SRV.PING", wait=0.5)
        text = [reply.data.decode(errors="replace") for reply in replies]
        trainers = sum(f'"{FL_TRAINER_SERVICE}"' in t for t in text)
        coordinators = sum(f'"{FL_COORDINATOR_SERVICE}"' in t for t in text)
        return trainers >= count and coordinators >= count

    await eventually(all_up, within=within, every=1.0)


async def start_job(bus: Bus, node: str, spec: FlJobSpec, *, within: float = 120.0) -> FlJobStatus:
    """Start ``spec`` on ``node``'s coordinator, retrying while consensus has no leader yet."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            return await request_when_served(
                bus, FL_START, spec, within=within, timeout=300.0, node=node
            )
        except ServiceError as error:
            if error.code != 503 or loop.time() > deadline:
                raise
            await asyncio.sleep(1.0)


async def job_status(bus: Bus, job_id: str, node: str) -> FlJobStatus:
    """The job's last checkpoint, as ``node``'s coordinator reads it."""
    answer = await request_when_served(
        bus, FL_STATUS, FlJobQuery(job_id=job_id), within=30.0, timeout=10.0, node=node
    )
    return answer.jobs[0]


async def wait_for_round_metrics(
    rounds: Recorder[FlRoundMetrics], job_id: str, number: int, *, within: float = 300.0
) -> None:
    """Until ``rounds`` has the job's round ``number``: a warm round takes a fraction of a
    second, so a poll of the job's status would see it too late to act between rounds."""
    await eventually(
        lambda: any(m.job_id == job_id and m.round >= number for _, m in rounds.events),
        within=within,
        every=0.005,
    )


async def wait_until_done(
    bus: Bus, job_id: str, nodes: Sequence[str], *, within: float = 300.0
) -> FlJobStatus:
    """The job once its checkpoint says it ended, asking any host."""
    found: list[FlJobStatus] = []

    async def ended() -> bool:
        for node in nodes:
            try:
                status = await job_status(bus, job_id, node)
            except BusError:
                continue
            found[:] = [status]
            return status.state != "running"
        return False

    await eventually(ended, within=within, every=0.5)
    return found[0]


def fedavg_in_process(
    shares: Sequence[int], hosts: int, *, rounds: int, epochs: int, lr: float, seed: int = 0
) -> float:
    """Digits FedAvg over the hosts holding ``shares`` (of ``hosts``), computed here with no
    mesh: the test accuracy of the global adapter after ``rounds``."""
    return fedavg_accuracies(shares, hosts, rounds=rounds, epochs=epochs, lr=lr, seed=seed)[-1]


def fedavg_accuracies(
    shares: Sequence[int],
    hosts: int,
    *,
    rounds: int,
    epochs: int,
    lr: float,
    seed: int = 0,
    label_skew: float | None = None,
) -> list[float]:
    """Like :func:`fedavg_in_process`: the test accuracy of the initial global adapter, then
    of each round's."""
    sessions = [TaskSession("digits", seed, HostData(i, hosts), label_skew) for i in shares]
    params = sessions[0].initial
    accuracies = [sessions[0].evaluate(params)["accuracy"]]
    for _ in range(rounds):
        received = []
        for i, session in zip(shares, sessions, strict=True):
            trained, result = session.train(params, epochs=epochs, lr=lr, proximal_mu=0.0)
            received.append(Received(f"n{i + 1}", trained, result.examples))
        params = aggregate_round(
            make_strategy("fedavg"), params, received, link_weighting=False, max_update_norm=20.0
        ).params
        accuracies.append(sessions[0].evaluate(params)["accuracy"])
    return accuracies
