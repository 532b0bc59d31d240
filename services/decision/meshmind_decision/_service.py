"""decision's wiring: the loop's ports over the bus, its endpoints, subscriptions and refresh."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from meshmind import __version__
from meshmind.bus import (
    Bus,
    BusError,
    Empty,
    EndpointSpec,
    EventSpec,
    Message,
    ServiceError,
    ServiceKit,
    background,
    get_logger,
    run,
)
from meshmind.bus.protocol import (
    CONSENSUS_CAS,
    CONSENSUS_GET,
    CONSENSUS_LEASE,
    CONSENSUS_LOG,
    CONSENSUS_MEMBERS,
    CONSENSUS_PROPOSE,
    CONSENSUS_PUT,
    CONSENSUS_STATUS,
    CONSENSUS_TRANSFER,
    DECISION_DECIDE,
    DECISION_EVENTS,
    DECISION_HISTORY,
    DECISION_SERVICE,
    DECISION_SWEEP,
    DECISION_VOTE,
    DISCOVERY_PEERS,
    FL_METRICS,
    HEALTH_HOST,
    LAB_SERVICES_RESTART,
    LINK_CHANGES,
    PEER_CHANGES,
    SWEEP_RECEIPTS,
    SWEEP_SIGNALS,
    SWEEP_WORK,
    ConsensusStatus,
    DecideRequest,
    DecisionAck,
    DecisionEvent,
    DecisionHistory,
    DecisionHistoryQuery,
    DecisionList,
    DecisionProposal,
    DecisionQuery,
    DecisionRecord,
    KvCas,
    KvEntryInfo,
    KvKey,
    KvPut,
    KvWrite,
    LeaseRequest,
    LeaseState,
    MemberChange,
    NodeRef,
    PeerQuery,
    SweepHostReport,
    SweepReceipt,
    SweepRequest,
    SweepResult,
    SweepSignal,
    SweepWork,
    TransferRequest,
    VoteReply,
    VoteRequest,
)
from meshmind.decision import (
    Actuators,
    Anomaly,
    DecisionEngine,
    Evidence,
    Sweeper,
)
from meshmind_decision._config import DecisionSettings

_log = get_logger(__name__)

STORE_TIMEOUT_S = 10.0
"""A consensus request may wait this long (the consensus service waits 5 s for a leader)."""
LAB_TIMEOUT_S = 60.0
HEALTH_TIMEOUT_S = 1.0

Q = TypeVar("Q", bound=Message)
R = TypeVar("R", bound=Message)
M = TypeVar("M", bound=Message)


class BusPorts:
    """The loop's ports: this host's consensus service, the other hosts' decision services,
    this host's events, and the actuators."""

    def __init__(self, bus: Bus, actuators: Actuators | None = None) -> None:
        self.bus = bus
        self.node = bus.node_id
        self.actuators = actuators

    async def vote(self, peer: str, request: VoteRequest, timeout_s: float) -> VoteReply:
        try:
            return await self.bus.request(DECISION_VOTE, request, timeout=timeout_s, node=peer)
        except ServiceError:
            raise
        except BusError as error:
            raise ServiceError(503, f"no vote from {peer}: {error}") from None

    async def get(self, key: str) -> KvEntryInfo:
        return await self._store(CONSENSUS_GET, KvKey(key=key))

    async def cas(self, request: KvCas) -> KvWrite:
        return await self._store(CONSENSUS_CAS, request)

    async def put(self, key: str, value: str) -> KvWrite:
        return await self._store(CONSENSUS_PUT, KvPut(key=key, value=value))

    async def append(self, record: str, idempotency_key: str) -> DecisionAck:
        proposal = DecisionProposal(record=record, idempotency_key=idempotency_key)
        return await self._store(CONSENSUS_PROPOSE, proposal)

    async def log(self, after: int, limit: int) -> DecisionList:
        return await self._store(CONSENSUS_LOG, DecisionQuery(after=after, limit=limit))

    async def publish(self, event: DecisionEvent) -> None:
        try:
            await self.bus.publish(DECISION_EVENTS, event, node=self.node)
        except BusError as error:
            raise ServiceError(503, str(error)) from None

    async def act(self, record: DecisionRecord) -> str:
        if self.actuators is None:
            raise ServiceError(500, "no actuators")
        return await self.actuators.act(record)

    async def _store(self, spec: EndpointSpec[Q, R], request: Q) -> R:
        """A request to this host's consensus service; unreachable means 503."""
        try:
            return await self.bus.request(spec, request, timeout=STORE_TIMEOUT_S, node=self.node)
        except ServiceError:
            raise
        except BusError as error:
            raise ServiceError(503, f"consensus unavailable: {error}") from None


class BusConsensusControl:
    """The consensus endpoints the actuators use: status and leases here, changes at the
    leader."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def status(self) -> ConsensusStatus:
        return await self._at(self.bus.node_id, CONSENSUS_STATUS, Empty())

    async def transfer(self, leader: str, to: str) -> ConsensusStatus:
        return await self._at(leader, CONSENSUS_TRANSFER, TransferRequest(to=to))

    async def change(self, leader: str, change: MemberChange) -> ConsensusStatus:
        return await self._at(leader, CONSENSUS_MEMBERS, change)

    async def lease(self, request: LeaseRequest) -> LeaseState:
        return await self._at(self.bus.node_id, CONSENSUS_LEASE, request)

    async def _at(self, node: str, spec: EndpointSpec[Q, R], request: Q) -> R:
        return await self.bus.request(spec, request, timeout=STORE_TIMEOUT_S, node=node)


class BusLabControl:
    """The lab's control service, reached through the hub."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def restart_services(self, node: str) -> str:
        status = await self.bus.request(
            LAB_SERVICES_RESTART, NodeRef(node=node), timeout=LAB_TIMEOUT_S
        )
        return f"lab restarted the services of {status.node} (its leaf running: {status.running})"


class BusSweepTransport:
    """The sweep's messages on their per-sender subjects."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def work(self, message: SweepWork) -> None:
        await self._send(SWEEP_WORK, message, message.recipient)

    async def signal(self, message: SweepSignal) -> None:
        await self._send(SWEEP_SIGNALS, message, message.recipient)

    async def receipt(self, message: SweepReceipt) -> None:
        await self._send(SWEEP_RECEIPTS, message, message.recipient)

    async def _send(self, spec: EventSpec[M], message: M, recipient: str) -> None:
        try:
            await self.bus.publish(spec, message, sender=self.bus.node_id, recipient=recipient)
        except BusError as error:
            raise ServiceError(503, str(error)) from None


class Decision:
    """One host's decision service: the loop, its endpoints and its refresh."""

    def __init__(self, bus: Bus, settings: DecisionSettings) -> None:
        self.bus = bus
        self.node = bus.node_id
        self.settings = settings
        self.consensus = BusConsensusControl(bus)
        actuators = Actuators(
            self.node,
            settings.actuators,
            self.consensus,
            lab=BusLabControl(bus) if settings.actuators == "lab" else None,
            alive=lambda: set(self.engine.situation.members),
            exclusion_ttl_s=settings.exclude_ttl_s,
            compose_project=settings.compose_project,
            interface=settings.mesh_interface,
            batman=settings.batman_iface,
        )
        self.engine = DecisionEngine(self.node, BusPorts(bus, actuators), settings.engine())
        self.sweeper = Sweeper(
            self.node,
            BusSweepTransport(bus),
            self.check_health,
            lambda: sorted(self.engine.situation.members),
            retransmit_s=settings.sweep_retransmit_s,
        )
        self.tasks: list[asyncio.Task[None]] = []

    async def refresh(self) -> None:
        """Read this host's peer list and the consensus group now and then: what the events
        missed (a start after the others, a lost event) is caught up here."""
        while True:
            try:
                peers = await self.bus.request(
                    DISCOVERY_PEERS, PeerQuery(), timeout=2.0, node=self.node
                )
                self.engine.peers_listed({p.node: p.started_at for p in peers.peers})
            except BusError as error:
                _log.debug("refresh.peers_failed", error=str(error))
            try:
                status = await self.consensus.status()
                self.engine.consensus_view(
                    {m.node for m in status.members},
                    {m.node for m in status.members if m.voter},
                    status.leader,
                )
            except BusError as error:
                _log.debug("refresh.consensus_failed", error=str(error))
            await asyncio.sleep(self.settings.refresh_s)

    async def check_health(self) -> SweepHostReport:
        """This host's own health, as its monitor reports it."""
        try:
            health = await self.bus.request(
                HEALTH_HOST, Empty(), timeout=HEALTH_TIMEOUT_S, node=self.node
            )
        except BusError as error:
            return SweepHostReport(node=self.node, state="unknown", detail=str(error)[:512])
        bad = [f"{link.target}: {link.state}" for link in health.links if link.state != "good"]
        return SweepHostReport(node=self.node, state=health.state, detail=", ".join(bad)[:512])

    async def decide(self, request: DecideRequest) -> DecisionRecord:
        """make_decision(context, timeout_ms): the anomaly this host sees now of that kind on
        that subject, the one the caller names, or a new occurrence."""
        current = self.engine.context(request.kind, request.subject, request.episode)
        episode = current.episode if current else request.episode or f"manual-{time.time_ns()}"
        given = tuple(Evidence(e.observer, e.what, e.at) for e in request.evidence)
        asked = Evidence(self.node, "asked through make_decision", time.time())
        anomaly = Anomaly(request.kind, request.subject, episode, (*given, asked))
        return await self.engine.decide(anomaly, request.timeout_ms / 1000)

    async def history(self, query: DecisionHistoryQuery) -> DecisionHistory:
        decisions, last_seq = await self.engine.history(query.after, query.limit)
        return DecisionHistory(node=self.node, decisions=decisions, last_seq=last_seq)

    async def sweep(self, request: SweepRequest) -> SweepResult:
        return await self.sweeper.sweep(request.timeout_ms / 1000)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.sweeper.close()
        await self.engine.close()


async def setup(bus: Bus, kit: ServiceKit) -> Callable[[], Awaitable[None]]:
    """Declare decision's endpoints and subscriptions and start its refresh."""
    settings = DecisionSettings()
    decision = Decision(bus, settings)
    node = bus.node_id
    kit.endpoint(DECISION_DECIDE, decision.decide, node=node)
    kit.endpoint(DECISION_VOTE, decision.engine.vote, node=node)
    kit.endpoint(DECISION_HISTORY, decision.history, node=node)
    kit.endpoint(DECISION_SWEEP, decision.sweep, node=node)
    await kit.subscribe(PEER_CHANGES, decision.engine.on_peer_change, observer=node)
    await kit.subscribe(LINK_CHANGES, decision.engine.on_link_change)
    await kit.subscribe(FL_METRICS, decision.engine.on_fl_round)
    await kit.subscribe(SWEEP_WORK, decision.sweeper.on_work, recipient=node)
    await kit.subscribe(SWEEP_SIGNALS, decision.sweeper.on_signal, recipient=node)
    await kit.subscribe(SWEEP_RECEIPTS, decision.sweeper.on_receipt, recipient=node)
    decision.tasks = [background(decision.refresh, "refresh")]
    _log.info("decision.ready", actuators=settings.actuators)
    return decision.close


def main() -> None:
    """Run the decision service until SIGTERM."""
    run(
        DECISION_SERVICE,
        __version__,
        setup,
        description="MAPE-K self-healing with agreed, exactly-once decisions.",
    )
