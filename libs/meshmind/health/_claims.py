"""What a link report or a probe reply claims, checked against where it sits and what it answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from meshmind.bus.protocol import LinkReport, Probe, ProbeReply

CLOCK_SKEW_S = 5.0
"""How far in the future a report's time may lie (clocks of hosts differ a little)."""


def link_key(source: str, target: str) -> str:
    """The ``mesh-links`` key of the directed link ``source -> target``."""
    return f"{source}.{target}"


def report_refusal(
    key: str, report: LinkReport, now: float, skew_s: float = CLOCK_SKEW_S
) -> str | None:
    """Why the report stored under ``key`` cannot be believed at unix time ``now``, or None."""
    if key != link_key(report.source, report.target):
        return f"claims {report.source}->{report.target}"
    if report.at > now + skew_s:
        return f"dated {report.at - now:.0f}s in the future"
    return None


@dataclass(frozen=True)
class CheckedReports:
    """Stored reports sorted into those believed and those refused (key -> reason)."""

    accepted: list[LinkReport] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def check_reports(
    stored: Mapping[str, LinkReport], now: float, skew_s: float = CLOCK_SKEW_S
) -> CheckedReports:
    """Keep the reports whose source and target match their key and whose time is not ahead
    of ``now`` by more than ``skew_s``; say why each other one is refused."""
    checked = CheckedReports()
    for key in sorted(stored):
        reason = report_refusal(key, stored[key], now, skew_s)
        if reason is None:
            checked.accepted.append(stored[key])
        else:
            checked.refused[key] = reason
    return checked


def reply_mismatch(peer: str, probe: Probe, reply: ProbeReply) -> str | None:
    """Why ``reply`` does not answer ``probe`` sent to ``peer``, or None when it does."""
    if reply.node != peer:
        return f"answered by {reply.node}, not {peer}"
    if reply.seq != probe.seq:
        return f"answers probe {reply.seq}, not {probe.seq}"
    return None
