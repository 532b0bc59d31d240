"""A local mesh on one machine: a hub, one leaf per host behind a link emulator, its services."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from meshmind.bus import Contract, check_node_id, get_logger
from meshmind.bus.protocol import CONTRACT, HostStatus, LabStatus, LinkStatus
from meshmind.lab._emulator import LinkEmulator
from meshmind.lab._nats_config import (
    HubSecurity,
    LeafSecurity,
    ServerPorts,
    hub_config,
    leaf_config,
)
from meshmind.lab._ports import free_ports
from meshmind.lab._process import ManagedProcess
from meshmind.lab._servers import (
    ServerExited,
    ServerHandle,
    ServerRunner,
    http_json,
    log_size,
    pick_runner,
    wait_healthy,
)
from meshmind.lab._state import RUN_MARKER
from meshmind.security import MeshCredentials, generate_credentials

SECURE_ENV = "MESHMIND_LAB_SECURE"
"""Set to 0 to make :class:`LocalMesh` run without TLS and credentials when it is not told
either way (it is secure by default, as a real mesh is)."""

_log = get_logger(__name__)

SERVICE_STOP_S = 10.0
"""How long a service may drain after SIGTERM before the lab kills it (a service's own
``DRAIN_TIMEOUT_S`` is 10 s by default)."""
SERVER_STOP_S = 5.0
"""How long a nats-server may take to exit after SIGTERM (it needs far less)."""
START_ATTEMPTS = 3
"""How many times a server is started on newly chosen ports when one was taken between
choosing it and binding it."""


@dataclass(frozen=True)
class ServiceCommand:
    """A service every host runs: its name and the argv that starts it."""

    name: str
    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Host:
    """One simulated mesh host."""

    node: str
    ports: ServerPorts
    link: LinkEmulator
    server: ServerHandle
    services: dict[str, ManagedProcess] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The host's leaf server, where its services connect."""
        return f"nats://127.0.0.1:{self.ports.client}"

    @property
    def monitor_url(self) -> str:
        """The leaf's monitoring endpoint."""
        return f"http://127.0.0.1:{self.ports.monitor}"

    def link_status(self) -> LinkStatus:
        """The host's link as the lab reports it."""
        return LinkStatus(
            node=self.node,
            shape=self.link.shape,
            cut=self.link.cut_off,
            cut_mode=self.link.cut_mode,
            connections=self.link.connections,
            bytes_up=self.link.bytes_up,
            bytes_down=self.link.bytes_down,
        )

    def status(self) -> HostStatus:
        """The host as the lab reports it."""
        pid = self.server.pid
        return HostStatus(
            node=self.node,
            leaf_url=self.url,
            running=self.server.running,
            pid=pid,
            link=self.link_status(),
        )


def node_names(count: int) -> list[str]:
    """``n1`` … ``nN``."""
    return [f"n{i}" for i in range(1, count + 1)]


class LocalMesh:
    """Starts and supervises a hub and one leaf per host; every leaf reaches the hub
    through its own :class:`LinkEmulator`. Use as an async context manager.
    """

    def __init__(
        self,
        run_dir: Path,
        nodes: Sequence[str],
        *,
        services: Sequence[ServiceCommand] = (),
        runner: ServerRunner | None = None,
        service_env: dict[str, str] | None = None,
        secure: bool | None = None,
        service_stop_s: float = SERVICE_STOP_S,
        contract: Contract = CONTRACT,
    ) -> None:
        """``secure``: leaves reach the hub over TLS with their own nkey and the permissions
        ``contract`` gives them (default: on, unless ``MESHMIND_LAB_SECURE`` is 0)."""
        for node in nodes:
            check_node_id(node)
        if len(set(nodes)) != len(nodes):
            raise ValueError("node ids must be distinct")
        self.run_dir = run_dir.resolve()
        self.nodes = list(nodes)
        self.service_commands = list(services)
        self.service_env = dict(service_env or {})
        self.service_stop_s = service_stop_s
        self.runner = runner or pick_runner()
        client, monitor, leafnode = free_ports(3)
        self.hub_ports = ServerPorts(client, monitor)
        self.hub_leafnode_port = leafnode
        self.hub: ServerHandle | None = None
        self.hosts: dict[str, Host] = {}
        if secure is None:
            secure = os.environ.get(SECURE_ENV, "1").strip().lower() not in ("0", "false", "no")
        self.secure = secure
        self.contract = contract
        self.credentials: MeshCredentials | None = None

    @property
    def _marker(self) -> dict[str, str]:
        return {RUN_MARKER: str(self.run_dir)}

    @property
    def hub_url(self) -> str:
        """The hub's client URL (for tools outside the mesh, such as the lab's control)."""
        return f"nats://127.0.0.1:{self.hub_ports.client}"

    @property
    def hub_monitor_url(self) -> str:
        """The hub's monitoring endpoint."""
        return f"http://127.0.0.1:{self.hub_ports.monitor}"

    def host(self, node: str) -> Host:
        """The host ``node``; :class:`KeyError` with a clear message if there is none."""
        try:
            return self.hosts[node]
        except KeyError:
            raise KeyError(
                f"no host {node!r} in this mesh (hosts: {', '.join(self.nodes)})"
            ) from None

    async def start(self, timeout: float = 30.0, *, services: bool = True) -> None:
        """Start the hub, every leaf and its link, wait until every leaf has joined the hub,
        then (unless ``services`` is false) start each host's services."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        hub_security = None
        if self.secure:
            self.credentials = generate_credentials(
                self.run_dir / "secrets", self.nodes, contract=self.contract
            )
            hub_security = HubSecurity(
                self.credentials.hub_cert,
                self.credentials.hub_key,
                self.credentials.hub_authorization.relative_to(self.run_dir),
            )
        hub_conf = self.run_dir / "hub.conf"
        for attempt in range(1, START_ATTEMPTS + 1):
            hub_conf.write_text(
                hub_config(
                    self.hub_ports,
                    self.hub_leafnode_port,
                    self.run_dir / "hub" / "jetstream",
                    hub_security,
                )
            )
            hub_log = self.run_dir / "hub.log"
            self.hub = self.runner.server("hub", hub_conf, hub_log, self._marker)
            offset = log_size(hub_log)
            await self.hub.start()
            try:
                await wait_healthy(
                    self.hub_monitor_url,
                    timeout,
                    server=self.hub,
                    log_path=hub_log,
                    log_offset=offset,
                )
                break
            except ServerExited as exited:
                await self.hub.kill()
                if not exited.port_taken or attempt == START_ATTEMPTS:
                    raise
                _log.warning("lab.port_taken", server="hub", attempt=attempt)
                client, monitor, leafnode = free_ports(3)
                self.hub_ports = ServerPorts(client, monitor)
                self.hub_leafnode_port = leafnode
        await asyncio.gather(*(self._add_host(node, timeout) for node in self.nodes))
        await self.wait_joined(self.nodes, timeout)
        if services:
            await self.start_services()
        _log.info("lab.started", hub=self.hub_url, hosts=len(self.hosts), runner=self.runner.name)

    async def stop(self) -> None:
        """Stop every service, leaf, link and the hub; nothing is left running.

        Each step runs on every host at once: all the services (SIGTERM, then SIGKILL after
        ``service_stop_s``), then all the leaves, then the links, then the hub. However many
        hosts there are, stopping takes at most ``service_stop_s + 2 * SERVER_STOP_S``.
        """
        hosts = list(self.hosts.values())
        await asyncio.gather(
            *(p.stop(self.service_stop_s) for h in hosts for p in h.services.values())
        )
        await asyncio.gather(*(h.server.stop(SERVER_STOP_S) for h in hosts))
        await asyncio.gather(*(h.link.stop() for h in hosts))
        if self.hub is not None:
            await self.hub.stop(SERVER_STOP_S)
        _log.info("lab.stopped")

    async def __aenter__(self) -> LocalMesh:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def joined(self) -> set[str]:
        """The hosts whose leaf is connected to the hub now (from the hub's ``/leafz``)."""
        with contextlib.suppress(OSError, ValueError):
            leafz = await http_json(f"{self.hub_monitor_url}/leafz")
            return {leaf.get("name", "") for leaf in leafz.get("leafs") or []}
        return set()

    async def wait_joined(self, nodes: Sequence[str], timeout: float = 20.0) -> None:
        """Wait until every one of ``nodes`` has a leaf connection to the hub."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not set(nodes) <= (current := await self.joined()):
            if loop.time() > deadline:
                missing = sorted(set(nodes) - current)
                raise TimeoutError(f"leaves not joined to the hub after {timeout:g}s: {missing}")
            await asyncio.sleep(0.05)

    async def start_services(self, nodes: Sequence[str] | None = None) -> None:
        """Start the services of ``nodes`` (default: every host) that are not running."""
        for node in nodes or self.nodes:
            await self._start_services(self.host(node))

    async def kill_services(self, node: str) -> None:
        """SIGKILL a host's services, leaving its leaf server up."""
        await asyncio.gather(*(p.kill() for p in self.host(node).services.values()))

    async def kill(self, node: str) -> HostStatus:
        """SIGKILL a host's services and its leaf server, as a power cut would."""
        host = self.host(node)
        await asyncio.gather(*(p.kill() for p in host.services.values()))
        await host.server.kill()
        _log.info("lab.node_killed", node=node)
        return host.status()

    async def restart(self, node: str, timeout: float = 20.0) -> HostStatus:
        """Stop what still runs of a host, then start its leaf and services again."""
        host = self.host(node)
        await asyncio.gather(*(p.stop(self.service_stop_s) for p in host.services.values()))
        await host.server.stop(SERVER_STOP_S)
        await self._start_leaf(host, timeout)
        if not host.link.cut_off:
            await self.wait_joined([node], timeout)
        await self._start_services(host)
        _log.info("lab.node_restarted", node=node)
        return host.status()

    def status(self) -> LabStatus:
        """Every host, its leaf and its link."""
        return LabStatus(
            hub_url=self.hub_url,
            hub_pid=self.hub.pid if self.hub is not None else None,
            run_dir=str(self.run_dir),
            hosts=[h.status() for h in self.hosts.values()],
        )

    async def _create_host(self, node: str) -> Host:
        client, monitor = free_ports(2)
        link = LinkEmulator(node, ("127.0.0.1", self.hub_leafnode_port))
        await link.start()
        ports = ServerPorts(client, monitor)
        conf = self.run_dir / node / "leaf.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        security = None
        if self.credentials is not None:
            seed = Path("..") / self.credentials.host_seed(node).relative_to(self.run_dir)
            local = Path("..") / self.credentials.host_authorization(node).relative_to(self.run_dir)
            security = LeafSecurity(seed, self.credentials.ca_cert, local)
        conf.write_text(
            leaf_config(
                node,
                ports,
                f"nats-leaf://127.0.0.1:{link.port}",
                self.run_dir / node / "jetstream",
                security,
            )
        )
        server = self.runner.server(node, conf, self.run_dir / node / "leaf.log", self._marker)
        return Host(node, ports, link, server)

    async def _add_host(self, node: str, timeout: float) -> None:
        """Create and start a host's link and leaf; a port taken between choosing it and the
        leaf binding it is chosen again."""
        for attempt in range(1, START_ATTEMPTS + 1):
            host = self.hosts[node] = await self._create_host(node)
            try:
                await self._start_leaf(host, timeout)
                return
            except ServerExited as exited:
                await host.server.kill()
                if not exited.port_taken or attempt == START_ATTEMPTS:
                    raise
                _log.warning("lab.port_taken", server=node, attempt=attempt)
                await host.link.stop()

    async def _start_leaf(self, host: Host, timeout: float) -> None:
        log_path = self.run_dir / host.node / "leaf.log"
        offset = log_size(log_path)
        await host.server.start()
        await wait_healthy(
            host.monitor_url, timeout, server=host.server, log_path=log_path, log_offset=offset
        )

    async def _start_services(self, host: Host) -> None:
        env = {**self.service_env, **self._marker, "NODE_ID": host.node, "NATS_URL": host.url}
        for command in self.service_commands:
            process = host.services.get(command.name)
            if process is None:
                process = ManagedProcess(
                    f"{host.node}/{command.name}",
                    command.argv,
                    log_path=self.run_dir / host.node / f"{command.name}.log",
                    env={**env, **command.env},
                )
                host.services[command.name] = process
            await process.start()
