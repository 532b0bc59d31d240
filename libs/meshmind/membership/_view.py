"""One host's view of the membership: peers, their last sighting, and the changes to announce."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from meshmind.bus.protocol import PeerInfo

ChangeKind = Literal["joined", "updated", "left"]


@dataclass(frozen=True)
class Change:
    """A membership change to announce."""

    kind: ChangeKind
    node: str
    peer: PeerInfo | None


def _identity(peer: PeerInfo) -> tuple[object, ...]:
    """What makes a peer 'updated' when it changes (load changes every beat, and does not)."""
    return (sorted(peer.services), sorted(peer.capabilities), peer.version, peer.started_at)


class PeerView:
    """Peers seen through the hub's bucket, kept while the hub is out of reach.

    Times are monotonic seconds given by the caller, so the view is deterministic to test.
    A peer not heard from for ``ttl_s`` is expired locally, but only while the view is
    confirmed (the caller confirms it while its watch of the bucket is heard from): a host
    that cannot hear the bucket keeps its last view, marked stale, instead of declaring
    everyone gone, and a gap in confirmations longer than ``confirm_gap_s`` restarts every
    peer's silence, since silence while we could not hear is not silence.

    Two live instances announcing one node id alternate in its key; the view reports them
    (:meth:`duplicates`) rather than announcing an ``updated`` at every switch.
    """

    def __init__(self, observer: str, ttl_s: float, confirm_gap_s: float | None = None) -> None:
        self.observer = observer
        self.ttl_s = ttl_s
        self.confirm_gap_s = ttl_s if confirm_gap_s is None else confirm_gap_s
        self._peers: dict[str, PeerInfo] = {}
        self._heard_at: dict[str, float] = {}
        self._confirmed_at: float | None = None
        self._instances: dict[str, dict[str, float]] = {}
        self._conflict_at: dict[str, float] = {}

    def put(self, peer: PeerInfo, now: float) -> Change | None:
        """Record a peer's announcement; a change to announce if it joined or changed."""
        known = self._peers.get(peer.node)
        self._peers[peer.node] = peer
        self._heard_at[peer.node] = now
        if self._switched_back(peer, known, now):
            self._conflict_at[peer.node] = now
        if known is None:
            return Change("joined", peer.node, peer)
        if self.conflicted(peer.node, now):
            return None
        if _identity(known) != _identity(peer):
            return Change("updated", peer.node, peer)
        return None

    def _switched_back(self, peer: PeerInfo, known: PeerInfo | None, now: float) -> bool:
        """Whether the key went back to an instance that wrote it lately: two instances write
        it in turn (a replacement takes it over once, and the one it replaced goes quiet)."""
        seen = self._instances.setdefault(peer.node, {})
        for instance, at in list(seen.items()):
            if now - at > self.ttl_s:
                del seen[instance]
        returning = peer.instance in seen
        seen[peer.instance] = now
        return known is not None and known.instance != peer.instance and returning

    def conflicted(self, node: str, now: float) -> bool:
        """Whether two instances announced ``node`` in turn within the TTL."""
        at = self._conflict_at.get(node)
        return at is not None and now - at <= self.ttl_s

    def duplicates(self, now: float) -> dict[str, list[str]]:
        """Node ids announced by more than one live instance, with those instances."""
        return {
            node: sorted(
                i for i, at in self._instances.get(node, {}).items() if now - at <= self.ttl_s
            )
            for node in sorted(self._conflict_at)
            if self.conflicted(node, now)
        }

    def remove(self, node: str) -> Change | None:
        """Forget a peer that left or expired; a ``left`` change if it was known."""
        peer = self._peers.pop(node, None)
        self._heard_at.pop(node, None)
        self._instances.pop(node, None)
        self._conflict_at.pop(node, None)
        return Change("left", node, peer) if peer is not None else None

    def expire(self, now: float) -> list[Change]:
        """``left`` for every peer silent for longer than the TTL, while the view is confirmed."""
        if self.stale(now, self.confirm_gap_s):
            return []
        silent = [n for n, at in self._heard_at.items() if now - at > self.ttl_s]
        return [c for c in (self.remove(n) for n in silent) if c is not None]

    def reconcile(self, current: dict[str, PeerInfo], now: float) -> list[Change]:
        """Bring the view in line with the bucket's full contents (after a reconnect).

        A peer missing from them is gone only once it has been silent for the TTL: a snapshot
        can miss a live key (its record was replaced while the snapshot was read, and the new
        one comes after it), so a peer heard lately is left to expire if it stays silent."""
        silent = {n for n, at in self._heard_at.items() if now - at > self.ttl_s}
        gone = (set(self._peers) - set(current)) & silent
        changes = [c for c in (self.remove(n) for n in gone) if c]
        changes += [c for c in (self.put(p, now) for p in current.values()) if c]
        self.confirm(now)
        return changes

    def confirm(self, now: float) -> None:
        """The bucket is heard from: the view is current as of ``now`` (a confirmation older
        than the last one changes nothing)."""
        if self._confirmed_at is not None and now <= self._confirmed_at:
            return
        if self.stale(now, self.confirm_gap_s):
            for node in self._heard_at:  # silence while we could not hear is not silence
                self._heard_at[node] = now
        self._confirmed_at = now

    def stale(self, now: float, after_s: float) -> bool:
        """Whether the hub has not confirmed the view for ``after_s`` seconds."""
        return self._confirmed_at is None or now - self._confirmed_at > after_s

    def age(self, now: float) -> float:
        """Seconds since the hub last confirmed the view."""
        return 0.0 if self._confirmed_at is None else max(0.0, now - self._confirmed_at)

    def peers(self, capability: str | None = None) -> list[PeerInfo]:
        """Known peers (this host included), optionally only those with ``capability``."""
        ordered = sorted(self._peers.values(), key=lambda p: p.node)
        return [p for p in ordered if capability is None or capability in p.capabilities]
