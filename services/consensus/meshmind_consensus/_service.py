"""consensus' wiring: the chosen backend behind the endpoints, requests passed to the leader."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from meshmind import __version__
from meshmind.bus import (
    Bus,
    BusError,
    Empty,
    EndpointSpec,
    NoResponders,
    RequestTimeout,
    ServiceError,
    ServiceKit,
    get_logger,
    run,
)
from meshmind.bus.protocol import (
    CONSENSUS_BATCH,
    CONSENSUS_CAS,
    CONSENSUS_DELETE,
    CONSENSUS_GET,
    CONSENSUS_LEASE,
    CONSENSUS_LOG,
    CONSENSUS_MEMBERS,
    CONSENSUS_PROPOSE,
    CONSENSUS_PUT,
    CONSENSUS_SERVICE,
    CONSENSUS_STATUS,
    CONSENSUS_TRANSFER,
    ConsensusRequest,
    ConsensusStatus,
    KvBatch,
    KvBatchResult,
    MemberChange,
    TransferRequest,
)
from meshmind.consensus import (
    ConsensusBackend,
    JetStreamBackend,
    RaftBackend,
    RaftBackendSettings,
    Unavailable,
    batch_reply,
)
from meshmind.raft import NotLeader, RaftError
from meshmind_consensus._config import ConsensusSettings

_log = get_logger(__name__)

Q = TypeVar("Q", bound=ConsensusRequest)
R = TypeVar("R", bound=Any)
LEADER_POLL_S = 0.05


class Consensus:
    """One host's consensus service: answers here when this host can, else asks the leader."""

    def __init__(self, bus: Bus, settings: ConsensusSettings, backend: ConsensusBackend) -> None:
        self.bus = bus
        self.settings = settings
        self.backend = backend
        self.node = bus.node_id

    async def led(
        self, spec: EndpointSpec[Q, R], request: Q, call: Callable[[], Awaitable[R]]
    ) -> R:
        """``call()`` here if this host leads; else the same request to the leader's endpoint.
        While no leader is known, wait for one (``CONSENSUS_FORWARD_WAIT_S`` at most)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.forward_wait_s
        while True:
            try:
                return await call()
            except NotLeader as error:
                leader = error.leader
            except RaftError as error:
                raise Unavailable(str(error)) from None
            if leader is not None and leader != self.node and not request.forwarded:
                return await self._forward(spec, request, leader, deadline - loop.time())
            if loop.time() >= deadline or request.forwarded:
                raise Unavailable(f"{self.node} is not the leader (leader: {leader or 'unknown'})")
            await asyncio.sleep(LEADER_POLL_S)

    async def _forward(self, spec: EndpointSpec[Q, R], request: Q, leader: str, budget: float) -> R:
        forwarded = request.model_copy(update={"forwarded": True})
        try:
            reply: R = await self.bus.request(
                spec, forwarded, timeout=max(0.5, budget), node=leader
            )
        except (RequestTimeout, NoResponders) as error:
            raise Unavailable(f"the leader {leader} did not answer: {error}") from None
        except ServiceError:
            raise
        except BusError as error:
            raise Unavailable(f"cannot reach the leader {leader}: {error}") from None
        return reply

    def bind(self, kit: ServiceKit) -> None:
        """Declare every endpoint of this host."""
        backend = self.backend
        node = self.node

        def keyed(spec: EndpointSpec[Q, R], call: Callable[[Q], Awaitable[R]]) -> None:
            async def handle(request: Q) -> R:
                return await self.led(spec, request, lambda: call(request))

            kit.endpoint(spec, handle, node=node)

        keyed(CONSENSUS_GET, lambda r: backend.get(r.key))
        keyed(CONSENSUS_PUT, lambda r: backend.put(r.key, r.value))
        keyed(CONSENSUS_CAS, backend.cas)
        keyed(CONSENSUS_DELETE, lambda r: backend.delete(r.key))

        async def batch(request: KvBatch) -> KvBatchResult:
            return batch_reply(await backend.batch(request.writes))

        keyed(CONSENSUS_BATCH, batch)
        keyed(CONSENSUS_LEASE, backend.lease)
        keyed(CONSENSUS_PROPOSE, backend.propose)
        keyed(CONSENSUS_LOG, backend.decisions)

        async def status(_: Empty) -> ConsensusStatus:
            return await backend.status()

        async def members(change: MemberChange) -> ConsensusStatus:
            return await self._admin(lambda: backend.change_members(change))

        async def transfer(request: TransferRequest) -> ConsensusStatus:
            return await self._admin(lambda: backend.transfer(request.to))

        kit.endpoint(CONSENSUS_STATUS, status, node=node)
        kit.endpoint(CONSENSUS_MEMBERS, members, node=node)
        kit.endpoint(CONSENSUS_TRANSFER, transfer, node=node)

    async def _admin(self, call: Callable[[], Awaitable[ConsensusStatus]]) -> ConsensusStatus:
        try:
            return await call()
        except NotLeader as error:
            raise ServiceError(
                409, f"only the leader changes the group; ask {error.leader or 'the leader'}"
            ) from None
        except (RaftError, ValueError) as error:
            raise ServiceError(409, str(error)) from None


def raft_settings(settings: ConsensusSettings) -> RaftBackendSettings:
    """The raft backend's settings from the service's."""
    return RaftBackendSettings(
        peers=tuple(settings.peers),
        data_dir=settings.data_dir,
        tick_s=settings.tick_s,
        election_ticks=settings.election_ticks,
        snapshot_every=settings.snapshot_every,
        lease_tick_s=settings.lease_tick_s,
        balance_every_s=settings.balance_every_s,
        member_grace_s=settings.member_grace_s,
    )


def build_backend(bus: Bus, settings: ConsensusSettings) -> ConsensusBackend:
    """The backend ``CONSENSUS_BACKEND`` names."""
    if settings.backend == "jetstream":
        return JetStreamBackend(bus, replicas=bus.settings.hub_replicas)
    return RaftBackend(bus, raft_settings(settings))


async def setup(bus: Bus, kit: ServiceKit) -> Callable[[], Awaitable[None]]:
    """Start the backend and declare the endpoints."""
    settings = ConsensusSettings()
    backend = build_backend(bus, settings)
    await backend.start()
    Consensus(bus, settings, backend).bind(kit)
    _log.info("consensus.ready", backend=backend.name)
    return backend.stop


def main() -> None:
    """Run the consensus service until SIGTERM."""
    run(
        CONSENSUS_SERVICE,
        __version__,
        setup,
        description="Raft consensus: a decision log and a linearizable key-value store.",
    )
