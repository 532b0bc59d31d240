"""Which hosts vote: all of them up to 7; from 8 on, the 5 most stable with the best links."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from meshmind.raft import ConfChange, ConfChangeKind, ConfState

ALL_VOTERS_UP_TO = 7
VOTERS = 5
KEEP_MARGIN = 0.1
"""A sitting voter keeps its seat unless a candidate's merit beats its own by this much."""


@dataclass(frozen=True)
class Candidate:
    """A live host: how long it has been up, and the mean quality of its links (0..1)."""

    node: str
    uptime_s: float
    link_score: float

    @property
    def merit(self) -> float:
        """Link quality, discounted for a host up less than ten minutes."""
        return self.link_score * min(1.0, 0.5 + self.uptime_s / 1200.0)


def target_conf(candidates: Iterable[Candidate], current: ConfState) -> ConfState:
    """The membership the group should have: every live host a member; all voters up to
    :data:`ALL_VOTERS_UP_TO`, else the :data:`VOTERS` best by merit, sitting voters
    preferred unless clearly beaten (so a small change in scores moves nobody). Members that
    are not live stay as they are (a host down for a while is not removed by itself)."""
    live = {c.node: c for c in candidates}
    members = current.members | set(live)
    if len(members) <= ALL_VOTERS_UP_TO:
        return ConfState(frozenset(members), frozenset())

    def rank(node: str) -> tuple[float, str]:
        merit = live[node].merit if node in live else -1.0
        bonus = KEEP_MARGIN if node in current.voters else 0.0
        return (-(merit + bonus), node)

    voters = frozenset(sorted(members, key=rank)[:VOTERS])
    return ConfState(voters, frozenset(members - voters))


def next_change(current: ConfState, target: ConfState) -> ConfChange | None:
    """The one membership change that moves ``current`` towards ``target``, safest first:
    add new members as learners, promote, then demote (remove a voter; it comes back as a
    learner next), keeping at least as many voters as the target has meanwhile."""
    for node in sorted(target.members - current.members):
        return ConfChange(ConfChangeKind.ADD_LEARNER, node)
    for node in sorted(target.voters - current.voters):
        return ConfChange(ConfChangeKind.ADD_VOTER, node)
    for node in sorted(current.voters - target.voters):
        return ConfChange(ConfChangeKind.REMOVE, node)
    return None
