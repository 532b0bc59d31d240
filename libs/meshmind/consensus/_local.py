"""A single-replica consensus backend in this process, for tests of the code that calls one."""

from __future__ import annotations

import time
from collections.abc import Callable

from meshmind.bus.protocol import ConsensusMember, ConsensusStatus, MemberChange
from meshmind.consensus._backend import BackendName, NotSupported
from meshmind.consensus._commands import Tick
from meshmind.consensus._model import Result
from meshmind.consensus._state import StoreState
from meshmind.consensus._state_backend import Stamped, StateBackend


class LocalStore(StateBackend):
    """A :class:`~meshmind.consensus.ConsensusBackend` over one in-memory :class:`StoreState`.

    Commands are stamped with ``clock()`` (Unix time by default) as a leader stamps its
    proposals; it always leads its group of one, so every call is served at once.
    """

    name: BackendName = "local"

    def __init__(self, node: str = "local", *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(StoreState())
        self.node = node
        self._clock = clock
        self._applied = 0

    async def start(self) -> None:
        """Nothing to start."""

    async def stop(self) -> None:
        """Nothing to release."""

    async def _execute(self, command: Stamped) -> Result:
        self._applied += 1
        return self.state.apply(command(self._clock()))

    async def _catch_up(self) -> None:
        await self._execute(Tick)  # a lease past its time must not be read as held

    async def status(self) -> ConsensusStatus:
        return ConsensusStatus(
            node=self.node,
            backend=self.name,
            role="leader",
            term=0,
            leader=self.node,
            commit_index=self._applied,
            applied_index=self._applied,
            members=[ConsensusMember(node=self.node, voter=True, match_index=self._applied)],
        )

    async def change_members(self, change: MemberChange) -> ConsensusStatus:
        raise NotSupported("a local store is a group of one")

    async def transfer(self, to: str) -> ConsensusStatus:
        raise NotSupported("a local store is a group of one")
