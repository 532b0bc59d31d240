"""What the replicated store holds and answers: keys, leases, decisions, command results."""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds a key, and from when (in command time) the hold is over."""

    holder: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class VersionedValue:
    """A key's value with the revision of its last write (and its creation), and its lease."""

    key: str
    value: bytes
    revision: int
    created_revision: int
    lease: Lease | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """One entry of the ordered decision log."""

    seq: int
    record: bytes
    idempotency_key: str
    at: float


class Status(enum.Enum):
    """How a command went."""

    OK = "ok"
    CONFLICT = "conflict"
    """A precondition failed (cas, a lease held by another, a leased key written)."""
    NOT_FOUND = "not_found"
    """Nothing to act on: no such key or no lease of this holder."""


@dataclass(frozen=True, slots=True)
class Result:
    """What applying one command did.

    ``current``: the key after the command (after an ok write) or as it stands (on conflict);
    ``revision``: the store's revision after the command; ``decision``: the appended (or, for a
    retried proposal, the earlier) decision; ``expired``: keys whose leases ran out first;
    ``writes``: a batch's own result of each of its writes, in order.
    """

    status: Status
    revision: int
    current: VersionedValue | None = None
    decision: Decision | None = None
    duplicate: bool = False
    expired: tuple[str, ...] = ()
    writes: tuple[Result, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the command took effect (or had already, for a retried decision)."""
        return self.status is Status.OK
