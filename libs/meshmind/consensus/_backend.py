"""What the consensus service needs of a backend: the same calls whether Raft or JetStream."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from meshmind.bus import ServiceError
from meshmind.bus.protocol import (
    ConsensusStatus,
    DecisionAck,
    DecisionList,
    DecisionProposal,
    DecisionQuery,
    KvBatchWrite,
    KvCas,
    KvEntryInfo,
    KvWrite,
    LeaseRequest,
    LeaseState,
    MemberChange,
)

BackendName = Literal["raft", "jetstream", "local"]
"""Which store serves: Raft among the hosts, the hub's JetStream, or one in-process replica."""


class Unavailable(ServiceError):
    """The backend cannot serve the request now (no leader, no quorum, no hub): 503."""

    def __init__(self, description: str) -> None:
        super().__init__(503, description)


class NotSupported(ServiceError):
    """The backend does not do this (501)."""

    def __init__(self, description: str) -> None:
        super().__init__(501, description)


class ConsensusBackend(Protocol):
    """A linearizable key-value store with leases and an ordered, idempotent decision log.

    A lease holds its key (the key's value is the holder) until it expires or is released, and
    then the key is gone; while held, the key changes only through :meth:`lease` (a put, cas or
    delete of it is refused). A call that cannot be served now raises :class:`Unavailable`, or
    ``meshmind.raft.NotLeader`` on a replica that does not lead.
    """

    name: BackendName

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def get(self, key: str) -> KvEntryInfo: ...

    async def put(self, key: str, value: str) -> KvWrite: ...

    async def cas(self, request: KvCas) -> KvWrite: ...

    async def delete(self, key: str) -> KvWrite: ...

    async def batch(self, writes: Sequence[KvBatchWrite]) -> list[KvWrite]:
        """Each write's outcome; writes to one key apply in the order given."""
        ...

    async def lease(self, request: LeaseRequest) -> LeaseState: ...

    async def propose(self, request: DecisionProposal) -> DecisionAck: ...

    async def decisions(self, query: DecisionQuery) -> DecisionList: ...

    async def status(self) -> ConsensusStatus: ...

    async def change_members(self, change: MemberChange) -> ConsensusStatus: ...

    async def transfer(self, to: str) -> ConsensusStatus: ...
