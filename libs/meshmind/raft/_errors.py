"""Why a Raft node refuses a request."""

from __future__ import annotations


class RaftError(Exception):
    """A request the node cannot serve now."""


class NotLeader(RaftError):
    """Only the leader serves this; ``leader`` is the node believed to lead (None: unknown)."""

    def __init__(self, leader: str | None) -> None:
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


class ProposalRefused(RaftError):
    """The leader cannot take this proposal now (a transfer or membership change is pending)."""
