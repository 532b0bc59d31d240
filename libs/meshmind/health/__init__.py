"""Link quality: probe scoring with hysteresis, the links a monitor tracks, and host sources
(interface counters over netlink, batman-adv tables over generic netlink)."""

from meshmind.health._batman import (
    BatadvMessage,
    BatmanAdv,
    BatmanNeighbour,
    BatmanOriginator,
    BatmanUnavailable,
    link_quality,
    parse_neighbour,
    parse_originator,
)
from meshmind.health._interfaces import (
    InterfaceRates,
    InterfaceSample,
    NetlinkInterfaces,
    rates,
)
from meshmind.health._links import LinkTable, ProbeRotation
from meshmind.health._scoring import LinkEstimate, LinkScorer, ScoringConfig, link_score

__all__ = [
    "BatadvMessage",
    "BatmanAdv",
    "BatmanNeighbour",
    "BatmanOriginator",
    "BatmanUnavailable",
    "InterfaceRates",
    "InterfaceSample",
    "LinkEstimate",
    "LinkScorer",
    "LinkTable",
    "NetlinkInterfaces",
    "ProbeRotation",
    "ScoringConfig",
    "link_quality",
    "link_score",
    "parse_neighbour",
    "parse_originator",
    "rates",
]
