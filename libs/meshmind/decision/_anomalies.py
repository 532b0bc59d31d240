"""Analyse: turn membership, link, load and training reports into anomalies with evidence."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshmind.bus.protocol import AnomalyKind, LinkState

LINK_KINDS: frozenset[AnomalyKind] = frozenset({"link-degraded", "link-down", "voter-bad-link"})
"""Anomalies of one directed link, ``source.target``."""


@dataclass(frozen=True, slots=True)
class Evidence:
    """One observation an anomaly rests on: who saw what, and when (Unix seconds)."""

    observer: str
    what: str
    at: float


@dataclass(frozen=True, slots=True)
class Anomaly:
    """Something wrong with a host or a link.

    ``episode`` is taken from the observation every host receives alike (a departed host's
    announced start time, the link report's own time), so every host that detects the same
    anomaly derives the same :attr:`key`: the key the agreed decision is committed under.
    """

    kind: AnomalyKind
    subject: str
    episode: str
    evidence: tuple[Evidence, ...] = ()

    @property
    def key(self) -> str:
        """The anomaly's identity across the mesh."""
        return f"{self.kind}/{self.subject}/{self.episode}"

    @property
    def hosts(self) -> tuple[str, ...]:
        """The hosts the anomaly is about: one host, or a link's two ends."""
        return tuple(self.subject.split(".", 1))


@dataclass(frozen=True, slots=True)
class AnalysisRules:
    """Thresholds of the analysis; each is a setting of the decision service."""

    overload_pct: float = 90.0
    overload_for_s: float = 30.0
    partition_share: float = 0.5
    """A host whose links to more than this share of its peers are down suspects a partition."""
    trainer_failures: int = 3
    trainer_window_s: float = 300.0


@dataclass
class _Link:
    state: LinkState
    at: float


@dataclass
class Situation:
    """What one host knows of the mesh, and the anomalies that follow from it."""

    node: str
    rules: AnalysisRules = field(default_factory=AnalysisRules)
    members: dict[str, float] = field(default_factory=dict)
    """Hosts this host's discovery lists now, with their announced start time."""
    links: dict[tuple[str, str], _Link] = field(default_factory=dict)
    voters: frozenset[str] = frozenset()
    _overloaded_since: dict[str, float] = field(default_factory=dict)
    _trainer_failures: dict[str, list[Evidence]] = field(default_factory=dict)
    _failing_trainers: set[str] = field(default_factory=set)
    _partitioned: set[str] = field(default_factory=set)

    def peer_joined(self, node: str, started_at: float) -> None:
        """A host is a member (joined, or listed by discovery)."""
        self.members[node] = started_at

    def peer_left(self, node: str, started_at: float, at: float) -> Anomaly:
        """A host left: the anomaly 'host gone', keyed by the start time it had announced."""
        self.members.pop(node, None)
        evidence = Evidence(self.node, f"discovery declared {node} left", at)
        return Anomaly("host-gone", node, f"{started_at:.6f}", (evidence,))

    def link_changed(self, source: str, target: str, state: LinkState, at: float) -> list[Anomaly]:
        """A link report from its source's monitor; anomalies when the link is bad."""
        self.links[(source, target)] = _Link(state, at)
        if state == "good":
            if self._partition_of(source, at) is None:
                self._partitioned.discard(source)
            return []
        evidence = (Evidence(source, f"link {source}->{target} {state}", at),)
        episode = f"{at:.6f}"
        kind: AnomalyKind = "link-down" if state == "down" else "link-degraded"
        found = [Anomaly(kind, f"{source}.{target}", episode, evidence)]
        if {source, target} & self.voters:
            found.append(Anomaly("voter-bad-link", f"{source}.{target}", episode, evidence))
        partition = self._partition_of(source, at)
        if partition is None:
            self._partitioned.discard(source)
        elif source not in self._partitioned:  # announced once per episode, as it begins
            self._partitioned.add(source)
            found.append(partition)
        return found

    def load(self, node: str, busiest_pct: float, at: float) -> Anomaly | None:
        """A host's load; 'overloaded' once it stayed above the threshold long enough."""
        if busiest_pct < self.rules.overload_pct:
            self._overloaded_since.pop(node, None)
            return None
        since = self._overloaded_since.setdefault(node, at)
        if at - since < self.rules.overload_for_s:
            return None
        evidence = Evidence(self.node, f"{node} above {self.rules.overload_pct:g}% since", since)
        return Anomaly("host-overloaded", node, f"{since:.6f}", (evidence,))

    def trainer_failed(self, node: str, at: float, what: str = "") -> Anomaly | None:
        """A trainer failed a round at ``at``; 'failing' after repeated failures within the
        window, keyed by the first of them, until :meth:`trainer_recovered`."""
        failure = Evidence(self.node, what or f"trainer {node} failed", at)
        recent = self._trainer_failures.get(node, [])
        window = [e for e in recent if at - e.at <= self.rules.trainer_window_s]
        window = sorted([*window, failure], key=lambda e: e.at)
        self._trainer_failures[node] = window
        if len(window) < self.rules.trainer_failures:
            return None
        self._failing_trainers.add(node)
        onset = tuple(window[: self.rules.trainer_failures])
        return Anomaly("trainer-failing", node, f"{window[0].at:.6f}", onset)

    def trainer_recovered(self, node: str) -> None:
        """A round went by without a failure of ``node``: it is failing no more (its earlier
        failures still count towards the next anomaly while they are in the window)."""
        self._failing_trainers.discard(node)

    @property
    def failing_trainers(self) -> frozenset[str]:
        """The trainers failing now."""
        return frozenset(self._failing_trainers)

    def holds(self, anomaly: Anomaly) -> bool:
        """Whether this host's own view still shows the anomaly."""
        if anomaly.kind == "host-gone":
            return anomaly.subject not in self.members
        if anomaly.kind in LINK_KINDS:
            source, target = anomaly.hosts
            link = self.links.get((source, target))
            return link is not None and link.state != "good"
        if anomaly.kind == "partition-suspected":
            return self._partition_of(anomaly.subject, 0.0) is not None
        if anomaly.kind == "host-overloaded":
            return anomaly.subject in self._overloaded_since
        return anomaly.subject in self._failing_trainers

    def sees_healthy(self, node: str) -> bool:
        """Whether this host has its own evidence that ``node`` is fine: a member, this host's
        own link to it (when measured) not down, and not failing as a trainer."""
        own = self.links.get((self.node, node))
        reachable = own is None or own.state != "down"
        return node in self.members and reachable and node not in self._failing_trainers

    def suspect(self, anomaly: Anomaly) -> str:
        """The host an anomaly most likely lies with: for a link, the end found in more bad
        links in this host's view (the far end, which its source measured, on a tie)."""
        hosts = anomaly.hosts
        if len(hosts) != 2:
            return hosts[0]
        source, target = hosts

        def bad_links(node: str) -> int:
            return sum(
                1 for ends, link in self.links.items() if link.state != "good" and node in ends
            )

        return source if bad_links(source) > bad_links(target) else target

    def bad_link_share(self, node: str) -> float:
        """The share of the other members that ``node`` has a bad link with, either way: near 1
        when the host's own link to the mesh is bad, low when one link between two hosts is."""
        others = [n for n in self.members if n != node]
        if not others:
            return 0.0
        bad = [
            n
            for n in others
            if any(
                (link := self.links.get(ends)) is not None and link.state != "good"
                for ends in ((node, n), (n, node))
            )
        ]
        return len(bad) / len(others)

    def _partition_of(self, source: str, at: float) -> Anomaly | None:
        peers = [n for n in self.members if n != source]
        if not peers:
            return None
        down = [n for n in peers if (link := self.links.get((source, n))) and link.state == "down"]
        if len(down) <= self.rules.partition_share * len(peers):
            return None
        evidence = Evidence(source, f"links from {source} down to {', '.join(sorted(down))}", at)
        return Anomaly("partition-suspected", source, f"{at:.6f}", (evidence,))
