"""The protocol contract: every subject, endpoint and payload model of meshmind, declared once.

``docs/protocol.md`` and ``docs/schemas/*.json`` are generated from this module
(``make docs``); a test fails when they are stale.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from meshmind.bus._contract import Contract
from meshmind.bus._message import Empty, Message, Record

CONTRACT = Contract()

NodeId = Field(pattern=r"^[A-Za-z0-9_-]+$", description="A host's id in the mesh.")
Name = Annotated[str, Field(min_length=1, max_length=64)]
"""A service, instance or capability name."""


# --- the lab: the local mesh on one machine -------------------------------------------------

LAB_SERVICE = "meshmind-lab"


class LinkShape(Record):
    """How the link emulator shapes one host's link to the hub, in both directions."""

    delay_ms: float = Field(default=0.0, ge=0, le=60_000, description="Added one-way latency.")
    jitter_ms: float = Field(default=0.0, ge=0, le=60_000, description="Random extra latency.")
    rate_bps: int | None = Field(
        default=None, gt=0, description="Bandwidth cap in bits per second; none means unlimited."
    )
    stall_pct: float = Field(
        default=0.0, ge=0, le=100, description="Share of segments held back as TCP would on loss."
    )
    stall_ms: float = Field(default=200.0, ge=0, le=60_000, description="How long a stall lasts.")


class LinkStatus(Message):
    """A host's emulated link: its shape, whether it is cut, and the traffic it carried."""

    node: str = NodeId
    shape: LinkShape
    cut: bool
    connections: int = Field(ge=0, description="TCP connections open through the link now.")
    bytes_up: int = Field(ge=0, description="Bytes carried from the host towards the hub.")
    bytes_down: int = Field(ge=0, description="Bytes carried from the hub towards the host.")


class HostStatus(Message):
    """One simulated host: its leaf server and its link."""

    node: str = NodeId
    leaf_url: str
    running: bool
    pid: int | None
    link: LinkStatus


class LabStatus(Message):
    """The whole local mesh."""

    hub_url: str
    hub_pid: int | None = Field(description="The hub server's pid, when it is a local process.")
    run_dir: str
    hosts: list[HostStatus]


class NodeRef(Message):
    """Names one host."""

    node: str = NodeId


class LinkSet(Message):
    """Give a host's link a new shape (fields left out mean no impairment)."""

    node: str = NodeId
    shape: LinkShape


class LabEvent(Message):
    """Something the lab did to a host or its link."""

    node: str = NodeId
    kind: Literal["link-set", "link-cut", "link-restored", "node-killed", "node-restarted"]
    link: LinkStatus
    at: float = Field(description="Unix time, seconds.")


LAB_STATUS = CONTRACT.endpoint(
    LAB_SERVICE, "status", "mesh.lab.status", Empty, LabStatus, "The lab's hosts and links."
)
LAB_LINK_SET = CONTRACT.endpoint(
    LAB_SERVICE,
    "link-set",
    "mesh.lab.link.set",
    LinkSet,
    LinkStatus,
    "Shape a host's link: latency, jitter, bandwidth cap, stalls.",
)
LAB_LINK_CUT = CONTRACT.endpoint(
    LAB_SERVICE,
    "link-cut",
    "mesh.lab.link.cut",
    NodeRef,
    LinkStatus,
    "Partition a host from the hub: drop its connections and refuse new ones.",
)
LAB_LINK_RESTORE = CONTRACT.endpoint(
    LAB_SERVICE,
    "link-restore",
    "mesh.lab.link.restore",
    NodeRef,
    LinkStatus,
    "Reconnect a host and clear every impairment of its link.",
)
LAB_NODE_KILL = CONTRACT.endpoint(
    LAB_SERVICE,
    "node-kill",
    "mesh.lab.node.kill",
    NodeRef,
    HostStatus,
    "Kill a host's processes (SIGKILL), as a power cut would.",
)
LAB_NODE_RESTART = CONTRACT.endpoint(
    LAB_SERVICE,
    "node-restart",
    "mesh.lab.node.restart",
    NodeRef,
    HostStatus,
    "Start a host's processes again (after a kill, or stop and start).",
)
LAB_SHUTDOWN = CONTRACT.endpoint(
    LAB_SERVICE,
    "shutdown",
    "mesh.lab.shutdown",
    Empty,
    Empty,
    "Tear the whole lab down; the reply comes before the hub goes away.",
)
LAB_EVENTS = CONTRACT.event(
    "mesh.lab.events.{node}", LabEvent, "The lab changed a host or its link."
)


# --- discovery: who is in the mesh --------------------------------------------------------

DISCOVERY_SERVICE = "meshmind-discovery"
PEERS_BUCKET = "mesh-peers"


class HostLoad(Record):
    """How busy a host is."""

    cpu_pct: float = Field(ge=0, le=100, description="CPU busy over the last interval.")
    mem_pct: float = Field(ge=0, le=100, description="Memory in use.")
    queues: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict,
        max_length=64,
        description="Pending messages per service, as each reports.",
    )


class PeerInfo(Message):
    """A host as its discovery service announces it (the value in the ``mesh-peers`` bucket)."""

    node: str = NodeId
    services: list[Name] = Field(max_length=64, description="Services running on the host.")
    capabilities: list[Name] = Field(
        max_length=64, description="What the host can do, e.g. 'train', 'gpu'."
    )
    load: HostLoad
    version: str
    started_at: float = Field(description="Unix time the discovery service started.")


class PeerChange(Message):
    """A change in the membership, as one host's discovery service saw it."""

    observer: str = NodeId
    node: str = NodeId
    kind: Literal["joined", "updated", "left"]
    peer: PeerInfo | None = Field(description="The peer's info; the last known one on 'left'.")
    at: float = Field(description="Unix time the observer saw the change.")


class PeerQuery(Message):
    """Which peers to list: all, or those with a capability."""

    capability: str | None = None


class PeerList(Message):
    """Peers as one host sees them; ``stale`` while that host cannot reach the hub."""

    observer: str = NodeId
    peers: list[PeerInfo]
    stale: bool
    age_s: float = Field(ge=0, description="Seconds since the view was last confirmed by the hub.")


class PeerPick(Message):
    """The least-loaded peer able to do something, if any."""

    observer: str = NodeId
    peer: PeerInfo | None
    stale: bool
    age_s: float = Field(ge=0)


class ServiceBeat(Message):
    """A service telling its host's discovery that it runs, and how much work is queued."""

    node: str = NodeId
    service: Name
    instance: Name
    queue_depth: int = Field(ge=0)


PEER_CHANGES = CONTRACT.event(
    "mesh.peers.{observer}.changes",
    PeerChange,
    "A host joined, changed (services, capabilities, version) or left, seen by one observer.",
)
SERVICE_BEATS = CONTRACT.event(
    "mesh.host.{node}.beats", ServiceBeat, "Every service's heartbeat to its host's discovery."
)
DISCOVERY_PEERS = CONTRACT.endpoint(
    DISCOVERY_SERVICE,
    "peers",
    "mesh.discovery.{node}.peers",
    PeerQuery,
    PeerList,
    "The peers a host knows, optionally only those with a capability.",
)
DISCOVERY_PICK = CONTRACT.endpoint(
    DISCOVERY_SERVICE,
    "pick",
    "mesh.discovery.{node}.pick",
    PeerQuery,
    PeerPick,
    "The least-loaded peer with a capability: the mesh's load balancer.",
)


# --- health-monitor: how good each link is ------------------------------------------------

HEALTH_SERVICE = "meshmind-health"
LINKS_BUCKET = "mesh-links"

LinkState = Literal["good", "degraded", "down"]


class Probe(Message):
    """A probe from one monitor to another."""

    origin: str = NodeId
    seq: int = Field(ge=0)


class ProbeReply(Message):
    """The answer to a probe."""

    node: str = NodeId
    seq: int = Field(ge=0)


class LinkReport(Message):
    """One directed link as its source's monitor measures it (the ``mesh-links`` value)."""

    source: str = NodeId
    target: str = NodeId
    state: LinkState
    score: float = Field(ge=0, le=1, description="Link quality, 1 best; see the README.")
    delivery: float = Field(ge=0, le=1, description="Share of recent probes answered.")
    rtt_ms: float | None = Field(description="Smoothed round trip, when any probe was answered.")
    jitter_ms: float | None = Field(description="Smoothed round-trip variation.")
    probes: int = Field(ge=0, description="Probes sent on this link so far.")
    at: float = Field(description="Unix time of the last probe result.")


class LinkChange(Message):
    """A link changed state or its score moved noticeably."""

    link: LinkReport
    previous: LinkState | None


class LinkList(Message):
    """Every link from one host, as its monitor measures them."""

    node: str = NodeId
    links: list[LinkReport]


class InterfaceHealth(Record):
    """One network interface of a host, from netlink."""

    name: str
    up: bool
    oper_state: str
    rx_error_ratio: float
    tx_error_ratio: float
    rx_drop_ratio: float
    tx_drop_ratio: float


class HostHealth(Message):
    """A host's overall health: its links, its interfaces, and which sources it has."""

    node: str = NodeId
    state: LinkState
    links: list[LinkReport]
    interfaces: list[InterfaceHealth]
    sources: dict[str, str] = Field(description="Each source and whether it is on or why not.")


HEALTH_PROBE = CONTRACT.endpoint(
    HEALTH_SERVICE,
    "probe",
    "mesh.health.{node}.probe",
    Probe,
    ProbeReply,
    "Answer another monitor's probe.",
    max_request_bytes=1024,
)
HEALTH_LINKS = CONTRACT.endpoint(
    HEALTH_SERVICE,
    "links",
    "mesh.health.{node}.links",
    Empty,
    LinkList,
    "A host's links as its monitor measures them.",
)
HEALTH_HOST = CONTRACT.endpoint(
    HEALTH_SERVICE,
    "host",
    "mesh.health.{node}.host",
    Empty,
    HostHealth,
    "A host's overall health: worst link state, links, interfaces, sources.",
)
LINK_CHANGES = CONTRACT.event(
    "mesh.health.{node}.link", LinkChange, "A link from this host changed state or score."
)
