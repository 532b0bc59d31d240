"""Whether a record read from the peers bucket can be believed where it sits."""

from __future__ import annotations

from meshmind.bus.protocol import PeerInfo

CLOCK_SKEW_S = 60.0
"""How far ahead of this host's clock a peer's start time may be before it is refused."""


def refusal(key: str, peer: PeerInfo, now: float, skew_s: float = CLOCK_SKEW_S) -> str | None:
    """Why ``peer``, found under ``key`` at Unix time ``now``, must not be believed; None when
    it can be: a record names the node of its key and started no later than now (give or take
    ``skew_s`` of clock difference)."""
    if peer.node != key:
        return f"record of {peer.node!r} under key {key!r}"
    if peer.started_at > now + skew_s:
        return f"started_at {peer.started_at - now:.0f}s in the future"
    return None
