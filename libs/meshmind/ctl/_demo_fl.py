"""The demo's federated job: started on the lab, followed round by round, plotted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from meshmind.bus import Bus, BusError, ServiceError
from meshmind.bus.protocol import FL_START, FL_STATUS, FlJobQuery, FlJobSpec, FlJobStatus
from meshmind.ctl._mesh_client import CtlError, with_bus

DEMO_JOB = FlJobSpec(
    job_id="demo",
    task="digits",
    rounds=10,
    participants=5,
    min_updates=3,
    strategy="fedavg",
    weighting="link",
    deadline_s=8.0,
)
"""Synchronous rounds that go on with 3 of 5 updates by an 8 s deadline, link-weighted."""
COORDINATORS = ("n1", "n2", "n3", "n5")
"""Who may hold the job: any coordinator that resumes it answers for it."""


START_WITHIN_S = 120.0
"""How long the demo asks again while the coordinator answers 503 (not started, try again)."""


def start_job(hub_url: str, spec: FlJobSpec = DEMO_JOB) -> FlJobStatus:
    """Start ``spec`` on n1's coordinator, as `meshctl fl start` would, asking again while
    it answers that nothing started and to try again (the hub or consensus was slow)."""

    async def ask(bus: Bus) -> FlJobStatus:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_WITHIN_S
        while True:
            try:
                return await bus.request(FL_START, spec, node="n1", timeout=120)
            except ServiceError as error:
                if error.code != 503 or loop.time() > deadline:
                    raise CtlError(f"n1's coordinator did not start the job: {error}") from None
                await asyncio.sleep(1.0)

    return with_bus(hub_url, ask)


def job_status(hub_url: str, job_id: str) -> FlJobStatus | None:
    """The job's last checkpoint, from the first coordinator that answers."""

    async def ask(bus: Bus) -> FlJobStatus | None:
        for node in COORDINATORS:
            try:
                found = await bus.request(
                    FL_STATUS, FlJobQuery(job_id=job_id), node=node, timeout=5
                )
            except BusError:
                continue
            return found.jobs[0] if found.jobs else None
        return None

    return with_bus(hub_url, ask)


def rounds_in(hub_url: str, job_id: str, rounds: int) -> Callable[[], FlJobStatus | None]:
    """A check that returns the job once it has ``rounds`` rounds, or has ended."""

    def check() -> FlJobStatus | None:
        status = job_status(hub_url, job_id)
        if status is None:
            return None
        return status if len(status.history) >= rounds or status.state != "running" else None

    return check


def plots(status: FlJobStatus, out: Path) -> list[Path]:
    """The job's accuracy and weights plots, written under ``out``."""
    from meshmind.ctl._fl_plot import plot_job  # matplotlib loads only for plots

    return plot_job(status, out)
