"""Federated learning on the mesh, without torch: trainer selection, object names, host data.

What a coordinator or trainer needs before any model exists: which hosts should train
(:func:`select_trainers`, by link quality and load, leaving out the hosts excluded under
:func:`exclusion_key`), where a job's adapters and checkpoints live in the hub's object store,
and where a host's data is (:class:`FlHostSettings`). The services import this at start and
load :mod:`meshmind.fl` (torch) when they need it: a trainer before it offers to train, a
coordinator with its first job.
"""

from meshmind.federation._carried import carried_or_fetched
from meshmind.federation._hosts import HostData, host_data
from meshmind.federation._objects import (
    checkpoint_object,
    global_object,
    job_of_checkpoint,
    update_object,
)
from meshmind.federation._selection import (
    Candidate,
    MeasuredLink,
    exclusion_key,
    host_link_quality,
    link_qualities,
    select_trainers,
)
from meshmind.federation._settings import FlHostSettings

__all__ = [
    "Candidate",
    "FlHostSettings",
    "HostData",
    "MeasuredLink",
    "carried_or_fetched",
    "checkpoint_object",
    "exclusion_key",
    "global_object",
    "host_data",
    "host_link_quality",
    "job_of_checkpoint",
    "link_qualities",
    "select_trainers",
    "update_object",
]
