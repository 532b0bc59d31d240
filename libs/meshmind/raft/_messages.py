"""The messages Raft nodes exchange: plain frozen dataclasses a transport can encode."""

from __future__ import annotations

from dataclasses import dataclass

from meshmind.raft._types import Entry, Snapshot


@dataclass(frozen=True, slots=True)
class PreVote:
    """Would you vote for me at ``term`` (one above mine)? Changes nobody's term."""

    sender: str
    recipient: str
    term: int
    last_index: int
    last_term: int


@dataclass(frozen=True, slots=True)
class PreVoteResponse:
    """The answer to a :class:`PreVote`."""

    sender: str
    recipient: str
    term: int
    granted: bool


@dataclass(frozen=True, slots=True)
class Vote:
    """A vote request; ``transfer`` marks a leadership transfer, which overrides leader leases."""

    sender: str
    recipient: str
    term: int
    last_index: int
    last_term: int
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse:
    """The answer to a :class:`Vote`."""

    sender: str
    recipient: str
    term: int
    granted: bool


@dataclass(frozen=True, slots=True)
class Append:
    """Entries following ``prev_index``/``prev_term``, and the leader's commit index."""

    sender: str
    recipient: str
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class AppendResponse:
    """Success: the follower's log matches up to ``index``. Rejection: ``index`` is the
    rejected ``prev_index``; ``reject_hint``/``hint_term`` is the follower's last entry that
    may match (its index, and its term), so the leader can skip a whole term at once."""

    sender: str
    recipient: str
    term: int
    index: int
    reject: bool = False
    reject_hint: int = 0
    hint_term: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Leadership assertion; ``context`` names the latest read request it confirms (0: none)."""

    sender: str
    recipient: str
    term: int
    commit: int
    context: int = 0


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    """The answer to a :class:`Heartbeat`, echoing its ``context``."""

    sender: str
    recipient: str
    term: int
    context: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """The leader's snapshot, for a follower whose next entry was compacted away."""

    sender: str
    recipient: str
    term: int
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer: campaign at once, without a pre-vote."""

    sender: str
    recipient: str
    term: int


Message = (
    PreVote
    | PreVoteResponse
    | Vote
    | VoteResponse
    | Append
    | AppendResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | TimeoutNow
)
