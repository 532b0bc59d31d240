"""Names of a job's objects in the hub's ``mesh-fl`` object store."""

from __future__ import annotations

CHECKPOINT_SUFFIX = "/checkpoint"


def job_prefix(job_id: str) -> str:
    """Every object of a job starts with this."""
    return f"jobs/{job_id}"


def checkpoint_object(job_id: str) -> str:
    """The job's latest checkpoint (its status: spec, history, latest global adapter)."""
    return f"{job_prefix(job_id)}{CHECKPOINT_SUFFIX}"


def global_object(job_id: str, version: int) -> str:
    """Global adapter version ``version``."""
    return f"{job_prefix(job_id)}/global/{version}"


def update_object(job_id: str, round_number: int, version: int, node: str) -> str:
    """A trainer's update for a round, trained from global ``version``."""
    return f"{job_prefix(job_id)}/updates/{round_number}-{version}/{node}"


def job_of_checkpoint(name: str) -> str | None:
    """The job id of a checkpoint object's name; ``None`` for any other object."""
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "jobs" and name.endswith(CHECKPOINT_SUFFIX):
        return parts[1]
    return None
