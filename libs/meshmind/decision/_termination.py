"""Dijkstra-Scholten termination detection for diffusing computations: a pure state machine."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Work:
    """A basic message of a diffusing computation; it engages its recipient if idle."""

    computation: str
    sender: str
    recipient: str
    msg_id: int
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class Signal:
    """The acknowledgement of one :class:`Work` message, sent back to its sender."""

    computation: str
    sender: str
    recipient: str
    acks: int


class DetectorError(Exception):
    """An operation that the algorithm does not allow in this state."""


@dataclass
class _Engagement:
    """One node's part in one computation."""

    parent: str | None
    engaged_by: int
    """The id of the work message that engaged this node (0 for the root)."""
    active: bool = True
    unacked: set[int] = field(default_factory=set)
    """Work messages sent and not yet acknowledged: the deficit."""


class TerminationDetector:
    """One node's Dijkstra-Scholten state, for any number of concurrent computations.

    A node is engaged by the first work message that reaches it while idle; that sender becomes
    its parent in the engagement tree and is acknowledged only once the node is passive and every
    message the node sent has been acknowledged. Work reaching an engaged node is acknowledged at
    once. The root (the initiator) learns of termination when the same holds for it. Duplicated
    messages are recognised by id and ignored, so the transport may redeliver; it must not lose.
    """

    def __init__(self, node: str) -> None:
        self.node = node
        self._engaged: dict[str, _Engagement] = {}
        self._seen: dict[str, set[tuple[str, int]]] = {}
        """(sender, msg_id) of work received per computation, kept across engagements, so a
        late duplicate is never taken for new work."""
        self._next_id = 0
        self._done: set[str] = set()

    def start(self, computation: str) -> None:
        """Initiate ``computation`` here: this node is its root and active."""
        if computation in self._engaged or computation in self._done:
            raise DetectorError(f"computation {computation!r} already known at {self.node}")
        self._engaged[computation] = _Engagement(parent=None, engaged_by=0)

    def send(self, computation: str, recipient: str, payload: bytes = b"") -> Work:
        """A work message to send; only an active, engaged node may send."""
        engagement = self._engaged.get(computation)
        if engagement is None or not engagement.active:
            raise DetectorError(f"{self.node} is not active in {computation!r}")
        self._next_id += 1
        engagement.unacked.add(self._next_id)
        return Work(computation, self.node, recipient, self._next_id, payload)

    def receive(self, work: Work) -> tuple[bool, list[Signal]]:
        """Take a work message: whether it is new (to be processed), and signals to send."""
        seen = self._seen.setdefault(work.computation, set())
        key = (work.sender, work.msg_id)
        if key in seen:
            return False, []
        seen.add(key)
        engagement = self._engaged.get(work.computation)
        if engagement is None:
            self._engaged[work.computation] = _Engagement(work.sender, engaged_by=work.msg_id)
            return True, []
        engagement.active = True
        return True, [Signal(work.computation, self.node, work.sender, work.msg_id)]

    def acknowledge(self, signal: Signal) -> list[Signal]:
        """Take a signal for work this node sent; signals to send in turn."""
        engagement = self._engaged.get(signal.computation)
        if engagement is None or signal.acks not in engagement.unacked:
            return []  # a duplicate, or for a computation already finished here
        engagement.unacked.discard(signal.acks)
        return self._maybe_detach(signal.computation, engagement)

    def passive(self, computation: str) -> list[Signal]:
        """This node finished its local work for ``computation``; signals to send."""
        engagement = self._engaged.get(computation)
        if engagement is None:
            raise DetectorError(f"{self.node} is not engaged in {computation!r}")
        engagement.active = False
        return self._maybe_detach(computation, engagement)

    def terminated(self, computation: str) -> bool:
        """Whether this node, as root of ``computation``, has detected its termination."""
        return computation in self._done

    def engaged(self, computation: str) -> bool:
        """Whether this node is part of the engagement tree of ``computation`` now."""
        return computation in self._engaged

    def parent(self, computation: str) -> str | None:
        """This node's parent in the engagement tree (None for the root or when idle)."""
        engagement = self._engaged.get(computation)
        return engagement.parent if engagement is not None else None

    def forget(self, computation: str) -> None:
        """Drop what is kept of a computation known to be over (its duplicate filter)."""
        self._seen.pop(computation, None)
        self._done.discard(computation)

    def _maybe_detach(self, computation: str, engagement: _Engagement) -> list[Signal]:
        if engagement.active or engagement.unacked:
            return []
        del self._engaged[computation]
        if engagement.parent is None:
            self._done.add(computation)
            return []
        return [Signal(computation, self.node, engagement.parent, engagement.engaged_by)]
