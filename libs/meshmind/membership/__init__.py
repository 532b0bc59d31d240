"""Membership: the view of who is in the mesh, and placing work on the least-loaded peer."""

from meshmind.membership._admission import CLOCK_SKEW_S, refusal
from meshmind.membership._balance import least_loaded, load_score
from meshmind.membership._host_load import HostLoadMeter, cpu_percent, memory_percent
from meshmind.membership._view import Change, PeerView

__all__ = [
    "CLOCK_SKEW_S",
    "Change",
    "HostLoadMeter",
    "PeerView",
    "cpu_percent",
    "least_loaded",
    "load_score",
    "memory_percent",
    "refusal",
]
