"""How meshctl reaches the consensus service: a host that answers, or the leader for changes."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from meshmind.bus import Bus, Empty, EndpointSpec, Message, NoResponders, RequestTimeout
from meshmind.bus.protocol import (
    CONSENSUS_MEMBERS,
    CONSENSUS_SERVICE,
    CONSENSUS_STATUS,
    CONSENSUS_TRANSFER,
    ConsensusStatus,
    MemberChange,
    TransferRequest,
)
from meshmind.ctl._mesh_client import CtlError, services_in_mesh
from meshmind.ctl._views import natural_key

R = TypeVar("R", bound=Message)

REQUEST_TIMEOUT_S = 10.0
"""How long one request to a consensus endpoint may take (a write waits for its commit)."""
TRANSFER_POLL_S = 0.1


class ConsensusClient:
    """Asks one host's consensus service (``node``), or else the first of them that answers."""

    def __init__(self, bus: Bus, node: str | None = None) -> None:
        self.bus = bus
        self.node = node
        self._hosts: list[str] | None = None

    async def hosts(self) -> list[str]:
        """``node`` alone when given; else every host whose consensus service answers a ping."""
        if self._hosts is None:
            if self.node is not None:
                self._hosts = [self.node]
            else:
                found = await services_in_mesh(self.bus)
                nodes = {s["node"] for s in found if s["name"] == CONSENSUS_SERVICE}
                self._hosts = sorted(nodes, key=natural_key)
            if not self._hosts:
                raise CtlError("no consensus service answers in this mesh")
        return self._hosts

    async def ask(self, spec: EndpointSpec[Any, R], request: Message) -> R:
        """``request`` to the first host that answers it (its error replies are final)."""
        silent: list[str] = []
        for host in await self.hosts():
            try:
                return await self.on(host, spec, request)
            except (NoResponders, RequestTimeout) as error:
                silent.append(f"{host} ({error})")
        raise CtlError("no consensus service answered: " + ", ".join(silent))

    async def on(self, host: str, spec: EndpointSpec[Any, R], request: Message) -> R:
        """``request`` to ``host``'s endpoint."""
        return await self.bus.request(spec, request, timeout=REQUEST_TIMEOUT_S, node=host)

    async def statuses(self) -> list[ConsensusStatus]:
        """The status of every host that answers (of ``node`` alone when given)."""
        hosts = await self.hosts()
        if self.node is not None:
            return [await self.on(self.node, CONSENSUS_STATUS, Empty())]
        replies = await asyncio.gather(
            *(self.on(host, CONSENSUS_STATUS, Empty()) for host in hosts), return_exceptions=True
        )
        found = [reply for reply in replies if isinstance(reply, ConsensusStatus)]
        if not found:
            raise CtlError("no consensus service answered a status request")
        return found

    async def find_leader(self) -> tuple[str, ConsensusStatus]:
        """The leader of the latest term any host knows (``node`` alone, when given), and that
        host's status; a :class:`CtlError` when no host knows a leader."""
        statuses = await self.statuses()
        knowing = [status for status in statuses if status.leader is not None]
        if not knowing:
            views = ", ".join(f"{s.node}: term {s.term}, {s.role}" for s in statuses)
            raise CtlError(f"no leader is known ({views})")
        view = max(knowing, key=lambda status: status.term)
        return view.leader or view.node, view

    async def group_status(self) -> ConsensusStatus:
        """The group as its leader sees it (with how far each member matches); as a host that
        knows the leader sees it when the leader does not answer."""
        leader, view = await self.find_leader()
        if leader == view.node:
            return view
        try:
            return await self.on(leader, CONSENSUS_STATUS, Empty())
        except (NoResponders, RequestTimeout):
            return view

    async def change_members(self, change: MemberChange) -> ConsensusStatus:
        """Apply one membership change through the leader; the group after it committed."""
        leader, _ = await self.find_leader()
        return await self.on(leader, CONSENSUS_MEMBERS, change)

    async def transfer(self, to: str, wait_s: float) -> ConsensusStatus:
        """Ask the leader to hand leadership to ``to``; ``to``'s status once it leads."""
        leader, _ = await self.find_leader()
        if leader == to:
            return await self.on(to, CONSENSUS_STATUS, Empty())
        await self.on(leader, CONSENSUS_TRANSFER, TransferRequest(to=to))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            try:
                status = await self.on(to, CONSENSUS_STATUS, Empty())
                if status.leader == to:
                    return status
            except (NoResponders, RequestTimeout):
                pass
            if loop.time() >= deadline:
                raise CtlError(f"leadership did not move from {leader} to {to} in {wait_s:g}s")
            await asyncio.sleep(TRANSFER_POLL_S)
