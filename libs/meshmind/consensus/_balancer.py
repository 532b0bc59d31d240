"""The leader's membership balancer: from who is up and how good their links are, the next
single change to the group (add a learner, promote, demote, remove) or a leadership hand-off."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from meshmind.bus.protocol import LinkReport, PeerInfo
from meshmind.consensus._voters import Candidate, next_change, target_conf
from meshmind.raft import ConfChange, ConfChangeKind, ConfState

UNMEASURED_SCORE = 0.5
"""The link score of a host no monitor has measured a link of yet: neither good nor bad."""


@dataclass(frozen=True)
class Transfer:
    """Hand leadership to ``to`` first: the change the group needs would demote the leader."""

    to: str


Action = ConfChange | Transfer


def candidates(
    peers: Iterable[PeerInfo], links: Iterable[LinkReport], now: float
) -> list[Candidate]:
    """Each live host with its uptime and the mean score of its links, both directions, to and
    from other live hosts (links to hosts that are gone say nothing about this one)."""
    live = {peer.node: peer for peer in peers}
    scores: dict[str, list[float]] = {node: [] for node in live}
    for link in links:
        if link.source in live and link.target in live and link.source != link.target:
            scores[link.source].append(link.score)
            scores[link.target].append(link.score)
    return [
        Candidate(
            node,
            max(0.0, now - peer.started_at),
            sum(scores[node]) / len(scores[node]) if scores[node] else UNMEASURED_SCORE,
        )
        for node, peer in sorted(live.items())
    ]


@dataclass
class Balancer:
    """Steps the group towards :func:`target_conf`, one change per step, for the leader
    ``leader``. While a member is missing for less than ``grace_s`` the group holds still
    (new hosts are still added as learners), so a host that restarts or flaps costs no
    membership change; a member missing longer is removed, and its seat refilled."""

    leader: str
    grace_s: float
    _missing_since: dict[str, float] = field(default_factory=dict)

    def step(self, now: float, conf: ConfState, live: Iterable[Candidate]) -> Action | None:
        """The next change towards the membership the group should have at ``now``, given
        the membership in effect and the hosts up now; None when it has it already."""
        present = {candidate.node: candidate for candidate in live}
        self._track_missing(now, conf, present)
        gone = {
            node
            for node, since in self._missing_since.items()
            if now - since >= self.grace_s and node != self.leader
        }
        if set(self._missing_since) - gone:
            newcomers = sorted(set(present) - conf.members)
            return ConfChange(ConfChangeKind.ADD_LEARNER, newcomers[0]) if newcomers else None
        target = target_conf(present.values(), ConfState(conf.voters - gone, conf.learners - gone))
        change = next_change(conf, target)
        if change is None:
            leftover = sorted(conf.members - target.members)
            change = ConfChange(ConfChangeKind.REMOVE, leftover[0]) if leftover else None
        if (
            change is not None
            and change.kind is ConfChangeKind.REMOVE
            and change.node == self.leader
        ):
            return self._successor(conf, target)
        return change

    def _track_missing(self, now: float, conf: ConfState, present: dict[str, Candidate]) -> None:
        for node in conf.members:
            if node in present:
                self._missing_since.pop(node, None)
            else:
                self._missing_since.setdefault(node, now)
        for node in set(self._missing_since) - conf.members:
            del self._missing_since[node]

    def _successor(self, conf: ConfState, target: ConfState) -> Transfer | None:
        """A live voter that keeps its seat, to lead while this leader is demoted."""
        heirs = sorted((target.voters & conf.voters) - set(self._missing_since) - {self.leader})
        return Transfer(heirs[0]) if heirs else None
