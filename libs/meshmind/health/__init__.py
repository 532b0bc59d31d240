"""Link quality: probe scoring with hysteresis, the links a monitor tracks, the checks on what
reports and replies claim, the mesh-links bucket, and host sources (interface counters over
netlink, batman-adv tables over generic netlink)."""

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
from meshmind.health._claims import (
    CLOCK_SKEW_S,
    CheckedReports,
    check_reports,
    link_key,
    reply_mismatch,
    report_refusal,
)
from meshmind.health._interfaces import (
    InterfaceRates,
    InterfaceSample,
    NetlinkInterfaces,
    rates,
)
from meshmind.health._links import LinkTable, ProbeRotation
from meshmind.health._scoring import LinkEstimate, LinkScorer, ScoringConfig, link_score
from meshmind.health._stored import MISSED_REFRESHES, links_ttl_s, read_links

__all__ = [
    "CLOCK_SKEW_S",
    "MISSED_REFRESHES",
    "BatadvMessage",
    "BatmanAdv",
    "BatmanNeighbour",
    "BatmanOriginator",
    "BatmanUnavailable",
    "CheckedReports",
    "InterfaceRates",
    "InterfaceSample",
    "LinkEstimate",
    "LinkScorer",
    "LinkTable",
    "NetlinkInterfaces",
    "ProbeRotation",
    "ScoringConfig",
    "check_reports",
    "link_key",
    "link_quality",
    "link_score",
    "links_ttl_s",
    "parse_neighbour",
    "parse_originator",
    "rates",
    "read_links",
    "reply_mismatch",
    "report_refusal",
]
