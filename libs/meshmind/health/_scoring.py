"""Link quality from periodic probes: a score in [0, 1] and a state with hysteresis."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal, TypeAlias

LinkState: TypeAlias = Literal["good", "degraded", "down"]


@dataclass(frozen=True)
class ScoringConfig:
    """How probe outcomes become a link's score and state; see :class:`LinkScorer`."""

    window: int = 10
    """Probes in the delivery-ratio window."""
    rtt_alpha: float = 0.5
    """EWMA weight of a new RTT sample."""
    jitter_alpha: float = 0.25
    """EWMA weight of a new ``|rtt - srtt|`` sample (RFC 6298 RTTVAR)."""
    rtt_reference_ms: float = 50.0
    """No penalty at or below this smoothed RTT."""
    rtt_scale_ms: float = 200.0
    """The penalty halves the score this far above the reference."""
    degrade_below: float = 0.6
    """good -> degraded when the score falls below."""
    recover_above: float = 0.75
    """degraded -> good when the score rises above."""
    down_after: int = 3
    """This many consecutive lost probes -> down."""
    report_delta: float = 0.1
    """A score move this large is noticeable."""

    def __post_init__(self) -> None:
        if self.window < 1 or self.down_after < 1:
            raise ValueError("window and down_after must be at least 1")
        if not (0.0 < self.rtt_alpha <= 1.0 and 0.0 < self.jitter_alpha <= 1.0):
            raise ValueError("rtt_alpha and jitter_alpha must be in (0, 1]")
        if self.rtt_reference_ms < 0.0 or self.rtt_scale_ms <= 0.0:
            raise ValueError("rtt_reference_ms must be >= 0 and rtt_scale_ms > 0")
        if not 0.0 <= self.degrade_below <= self.recover_above <= 1.0:
            raise ValueError("need 0 <= degrade_below <= recover_above <= 1")
        if self.report_delta < 0.0:
            raise ValueError("report_delta must be >= 0")


@dataclass(frozen=True)
class LinkEstimate:
    """A link's quality after its latest probe."""

    state: LinkState
    score: float
    """In [0, 1], 1 best."""
    delivery: float
    """Answered / sent over the window, in [0, 1]."""
    rtt_ms: float | None
    """Smoothed RTT, None until a probe is answered."""
    jitter_ms: float | None
    """Smoothed RTT variation, None until a probe is answered."""
    probes: int
    """Probes recorded so far."""


def link_score(delivery: float, srtt_ms: float | None, config: ScoringConfig) -> float:
    """The score of :class:`LinkScorer`: ``delivery`` discounted by the smoothed RTT.

    ``delivery / (1 + max(0, srtt_ms - rtt_reference_ms) / rtt_scale_ms)``, or ``delivery``
    itself while ``srtt_ms`` is None.
    """
    if not 0.0 <= delivery <= 1.0:
        raise ValueError(f"delivery {delivery} is not in [0, 1]")
    if srtt_ms is None:
        return delivery
    excess = max(0.0, srtt_ms - config.rtt_reference_ms)
    return delivery / (1.0 + excess / config.rtt_scale_ms)


class LinkScorer:
    """The quality of one directed link, from the outcomes of its probes in order.

    Each probe is either answered after a round-trip time ``R`` (ms) or lost.

    Delivery ``D`` is the share of answered probes among the last ``window`` probes (among
    all of them while fewer have been sent).

    The smoothed RTT ``SRTT`` and its variation ``RTTVAR`` (reported as jitter) follow
    RFC 6298 with ``a = rtt_alpha`` and ``b = jitter_alpha``. The first answer sets
    ``SRTT = R`` and ``RTTVAR = R / 2``; every later answer sets, in this order::

        RTTVAR = (1 - b) * RTTVAR + b * |SRTT - R|
        SRTT   = (1 - a) * SRTT   + a * R

    Lost probes change neither. The score is::

        score = D / (1 + max(0, SRTT - rtt_reference_ms) / rtt_scale_ms)

    with no RTT penalty before the first answer. With the defaults, an SRTT of at most 50 ms
    costs nothing and one of 250 ms halves the score; the score is 0 when no probe in the
    window was answered.

    The state after each probe, checked in this order:

    1. "down" if the last ``down_after`` probes were all lost;
    2. from "down", "degraded": an answer never brings a link straight back to "good";
    3. from "good", "degraded" if ``score < degrade_below``, else "good";
    4. from "degraded", "good" if ``score > recover_above``, else "degraded".

    Before its first probe a link is optimistically "good" with score 1, delivery 1 and no
    RTT, so that a new peer is not reported degraded before it is measured.
    """

    def __init__(self, config: ScoringConfig = ScoringConfig()) -> None:
        self._config = config
        self._answered: deque[bool] = deque(maxlen=config.window)
        self._lost_in_a_row = 0
        self._srtt: float | None = None
        self._rttvar: float | None = None
        self._estimate = LinkEstimate("good", 1.0, 1.0, None, None, 0)

    @property
    def estimate(self) -> LinkEstimate:
        """The estimate after the latest probe, or the optimistic one before any."""
        return self._estimate

    def record(self, rtt_ms: float | None) -> LinkEstimate:
        """Account for one probe, answered after ``rtt_ms`` or lost (None); the new estimate."""
        if rtt_ms is None:
            self._lost_in_a_row += 1
        else:
            if not (math.isfinite(rtt_ms) and rtt_ms >= 0.0):
                raise ValueError(f"rtt_ms {rtt_ms} is not a finite non-negative number")
            self._smooth(rtt_ms)
            self._lost_in_a_row = 0
        self._answered.append(rtt_ms is not None)
        delivery = sum(self._answered) / len(self._answered)
        score = link_score(delivery, self._srtt, self._config)
        self._estimate = LinkEstimate(
            state=self._next_state(score),
            score=score,
            delivery=delivery,
            rtt_ms=self._srtt,
            jitter_ms=self._rttvar,
            probes=self._estimate.probes + 1,
        )
        return self._estimate

    def noticeable(self, previous: LinkEstimate | None, current: LinkEstimate) -> bool:
        """Whether ``current`` is worth reporting after ``previous`` (None: nothing reported).

        True for a first estimate, a state change, or a score move of at least ``report_delta``.
        """
        return (
            previous is None
            or previous.state != current.state
            or abs(current.score - previous.score) >= self._config.report_delta
        )

    def _smooth(self, rtt_ms: float) -> None:
        if self._srtt is None or self._rttvar is None:
            self._srtt, self._rttvar = rtt_ms, rtt_ms / 2.0
            return
        b, a = self._config.jitter_alpha, self._config.rtt_alpha
        self._rttvar = (1.0 - b) * self._rttvar + b * abs(self._srtt - rtt_ms)
        self._srtt = (1.0 - a) * self._srtt + a * rtt_ms

    def _next_state(self, score: float) -> LinkState:
        config, state = self._config, self._estimate.state
        if self._lost_in_a_row >= config.down_after:
            return "down"
        if state == "down":
            return "degraded"
        if state == "good":
            return "degraded" if score < config.degrade_below else "good"
        return "good" if score > config.recover_above else "degraded"
