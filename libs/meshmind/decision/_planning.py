"""Plan and judge: candidate actions for an anomaly, and a peer's vote from its own evidence."""

from __future__ import annotations

from dataclasses import dataclass

from meshmind.bus.protocol import AnomalyKind
from meshmind.decision._anomalies import Anomaly, Situation
from meshmind.decision._knowledge import KnowledgeBase

CANDIDATES: dict[AnomalyKind, tuple[str, ...]] = {
    "host-gone": ("restart-services", "wait"),
    "link-degraded": ("transfer-leadership", "demote-voter", "wait"),
    "link-down": ("transfer-leadership", "demote-voter", "wait"),
    "voter-bad-link": ("transfer-leadership", "demote-voter", "wait"),
    "partition-suspected": ("reset-interface", "wait"),
    "host-overloaded": ("exclude-trainer", "wait"),
    "trainer-failing": ("exclude-trainer", "restart-services", "wait"),
}
"""Actions per kind of anomaly, in the order preferred before anything is known."""

LINK_ACTIONS = frozenset({"transfer-leadership", "demote-voter"})
"""Actions against one end of a bad link: the end the planner suspects."""

ACTS_ON_HOST = frozenset({"restart-services", "exclude-trainer", "reset-interface"})
"""Actions that do something to a host, which a voter approves only on its own evidence."""


@dataclass(frozen=True, slots=True)
class Plan:
    """An anomaly and the action proposed for it, with the alternatives as ranked."""

    anomaly: Anomaly
    action: str
    target: str
    ranking: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Vote:
    """A peer's judgement of a plan, with its reason."""

    voter: str
    approve: bool
    reason: str


def plan(anomaly: Anomaly, knowledge: KnowledgeBase, situation: Situation | None = None) -> Plan:
    """The best-ranked action for ``anomaly`` and the host it acts on: for a link, the end the
    planner's ``situation`` suspects (without one, the far end, which the source measured)."""
    ranking = tuple(knowledge.rank(anomaly.kind, CANDIDATES[anomaly.kind]))
    action = ranking[0]
    return Plan(anomaly, action, _target(anomaly, action, situation), ranking)


def _target(anomaly: Anomaly, action: str, situation: Situation | None) -> str:
    hosts = anomaly.hosts
    if len(hosts) == 2 and action in LINK_ACTIONS:
        return situation.suspect(anomaly) if situation is not None else hosts[1]
    return hosts[0]


def judge(proposal: Plan, situation: Situation) -> Vote:
    """Approve only what this host's own view supports.

    The anomaly must still hold here; an action on a host needs this host's own evidence
    that the host is unwell, so a host that is alone in its view (its own link is cut)
    cannot get a healthy peer acted upon.
    """
    me = situation.node
    if not situation.holds(proposal.anomaly):
        return Vote(me, False, f"{proposal.anomaly.key} does not hold in {me}'s view")
    if proposal.action in LINK_ACTIONS and len(proposal.anomaly.hosts) == 2:
        suspect = situation.suspect(proposal.anomaly)
        if suspect != proposal.target:
            return Vote(me, False, f"{me} suspects {suspect}, not {proposal.target}")
    acts_on_other = proposal.action in ACTS_ON_HOST and proposal.target != me
    if acts_on_other and situation.sees_healthy(proposal.target):
        return Vote(me, False, f"{me} sees {proposal.target} healthy")
    return Vote(me, True, f"{me} sees {proposal.anomaly.kind} on {proposal.anomaly.subject}")
