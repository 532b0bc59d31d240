"""The protocol contract: every subject, endpoint and payload model of meshmind, declared once.

``docs/protocol.md`` and ``docs/schemas/*.json`` are generated from this module
(``make docs``); a test fails when they are stale.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from meshmind.bus._contract import Contract
from meshmind.bus._message import Empty, Message, Record

CONTRACT = Contract()

NodeId = Field(pattern=r"^[A-Za-z0-9_-]+$", description="A host's id in the mesh.")


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
