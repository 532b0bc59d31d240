"""Membership changes: one voter or learner added, promoted or removed at a time."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from meshmind.raft._types import ConfState


class ConfChangeKind(enum.Enum):
    """What a membership change does to its node."""

    ADD_VOTER = "add-voter"
    """Add a voter, or promote a learner to voter."""
    ADD_LEARNER = "add-learner"
    """Add a non-voting member that receives the log."""
    REMOVE = "remove"
    """Remove a voter or learner."""


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One single-step membership change."""

    kind: ConfChangeKind
    node: str

    def apply_to(self, conf: ConfState) -> ConfState:
        """The membership after this change; ValueError if it does not apply to ``conf``."""
        node = self.node
        if self.kind is ConfChangeKind.ADD_VOTER:
            if node in conf.voters:
                raise ValueError(f"{node} is already a voter")
            return ConfState(conf.voters | {node}, conf.learners - {node})
        if self.kind is ConfChangeKind.ADD_LEARNER:
            if node in conf.members:
                raise ValueError(f"{node} is already a member")
            return ConfState(conf.voters, conf.learners | {node})
        if node not in conf.members:
            raise ValueError(f"{node} is not a member")
        if conf.voters == {node}:
            raise ValueError(f"{node} is the last voter")
        return ConfState(conf.voters - {node}, conf.learners - {node})


def encode_conf(conf: ConfState) -> bytes:
    """A membership entry's data: sorted voters, then sorted learners (node ids hold no '|'
    or ',')."""
    return f"{','.join(sorted(conf.voters))}|{','.join(sorted(conf.learners))}".encode()


def decode_conf(data: bytes) -> ConfState:
    """The membership in an entry written by :func:`encode_conf`."""
    voters, learners = data.decode().split("|")
    return ConfState(frozenset(voters.split(",")) - {""}, frozenset(learners.split(",")) - {""})
