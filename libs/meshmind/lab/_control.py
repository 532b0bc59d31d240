"""The lab's control service: the local mesh's hosts and links, driven over NATS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from meshmind.bus import Bus, Empty, ServiceError, ServiceKit
from meshmind.bus.protocol import (
    LAB_EVENTS,
    LAB_LINK_CUT,
    LAB_LINK_RESTORE,
    LAB_LINK_SET,
    LAB_NODE_KILL,
    LAB_NODE_RESTART,
    LAB_SERVICES_RESTART,
    LAB_SHUTDOWN,
    LAB_STATUS,
    HostStatus,
    LabEvent,
    LabEventKind,
    LabStatus,
    LinkCut,
    LinkSet,
    LinkStatus,
    NodeRef,
)
from meshmind.lab._mesh import Host, LocalMesh


def lab_control(
    mesh: LocalMesh, stop: asyncio.Event
) -> Callable[[Bus, ServiceKit], Awaitable[None]]:
    """The set-up of the lab's control service over ``mesh``; ``shutdown`` sets ``stop``."""

    async def setup(bus: Bus, kit: ServiceKit) -> None:
        def host(node: str) -> Host:
            if node not in mesh.hosts:
                raise ServiceError(404, f"no host {node!r} in this lab ({', '.join(mesh.nodes)})")
            return mesh.hosts[node]

        async def announce(node: str, kind: LabEventKind) -> None:
            event = LabEvent(node=node, kind=kind, link=host(node).link_status(), at=time.time())
            await bus.publish(LAB_EVENTS, event, node=node)

        async def status(_: Empty) -> LabStatus:
            return mesh.status()

        async def link_set(request: LinkSet) -> LinkStatus:
            host(request.node).link.set_shape(request.shape)
            await announce(request.node, "link-set")
            return host(request.node).link_status()

        async def link_cut(request: LinkCut) -> LinkStatus:
            await host(request.node).link.cut(request.mode)
            await announce(request.node, "link-cut")
            return host(request.node).link_status()

        async def link_restore(request: NodeRef) -> LinkStatus:
            host(request.node).link.restore()
            await announce(request.node, "link-restored")
            return host(request.node).link_status()

        async def node_kill(request: NodeRef) -> HostStatus:
            host(request.node)
            status = await mesh.kill(request.node)
            await announce(request.node, "node-killed")
            return status

        async def node_restart(request: NodeRef) -> HostStatus:
            host(request.node)
            status = await mesh.restart(request.node)
            await announce(request.node, "node-restarted")
            return status

        async def services_restart(request: NodeRef) -> HostStatus:
            if host(request.node).server.running:
                await mesh.start_services([request.node])
            else:  # a killed host: its leaf too
                await mesh.restart(request.node)
            await announce(request.node, "services-restarted")
            return host(request.node).status()

        async def shutdown(_: Empty) -> Empty:
            asyncio.get_running_loop().call_later(0.1, stop.set)
            return Empty()

        kit.endpoint(LAB_STATUS, status)
        kit.endpoint(LAB_LINK_SET, link_set)
        kit.endpoint(LAB_LINK_CUT, link_cut)
        kit.endpoint(LAB_LINK_RESTORE, link_restore)
        kit.endpoint(LAB_NODE_KILL, node_kill)
        kit.endpoint(LAB_NODE_RESTART, node_restart)
        kit.endpoint(LAB_SERVICES_RESTART, services_restart)
        kit.endpoint(LAB_SHUTDOWN, shutdown)

    return setup
