"""Parsing the units operators type: ``80ms``, ``1mbit``, ``5%``."""

from __future__ import annotations

import re

_NUMBER = r"(\d+(?:\.\d+)?)"
_DURATION = re.compile(rf"^{_NUMBER}\s*(us|ms|s)?$")
_RATE = re.compile(rf"^{_NUMBER}\s*(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)?$", re.IGNORECASE)
_PERCENT = re.compile(rf"^{_NUMBER}\s*%?$")

_DURATION_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, None: 1.0}
_RATE_BPS = {
    "bit": 1,
    "kbit": 1e3,
    "mbit": 1e6,
    "gbit": 1e9,
    "bps": 8,
    "kbps": 8e3,
    "mbps": 8e6,
    "gbps": 8e9,
}


def parse_duration_ms(text: str) -> float:
    """``80ms``, ``1.5s``, ``250us`` or a bare number of milliseconds, in milliseconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration (try 80ms, 1.5s)")
    return float(match.group(1)) * _DURATION_MS[match.group(2)]


def parse_rate_bps(text: str) -> int:
    """``1mbit``, ``500kbit``, ``2mbps`` (bytes, as tc reads it) or bare bits per second."""
    match = _RATE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a rate (try 1mbit, 500kbit)")
    unit = (match.group(2) or "bit").lower()
    rate = int(float(match.group(1)) * _RATE_BPS[unit])
    if rate <= 0:
        raise ValueError(f"{text!r}: a rate must be above zero")
    return rate


def parse_percent(text: str) -> float:
    """``5%`` or ``5``, between 0 and 100."""
    match = _PERCENT.match(text.strip())
    if not match or float(match.group(1)) > 100:
        raise ValueError(f"{text!r} is not a percentage between 0 and 100")
    return float(match.group(1))
