"""The protocol contract: every subject, endpoint and payload model of meshmind, declared once.

``docs/protocol.md`` and ``docs/schemas/*.json`` are generated from this module
(``make docs``); a test fails when they are stale.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import Field, model_validator

from meshmind.bus._contract import Contract, EndpointSpec, Party, StoreKind
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


CutMode = Literal["loud", "silent", "up", "down"]
"""How a link is cut: ``loud`` resets its connections and refuses new ones; ``silent`` keeps
them open and drops every byte both ways, as a radio link that fades does; ``up`` drops only
what the host sends towards the hub, ``down`` only what the hub sends towards the host."""


class LinkStatus(Message):
    """A host's emulated link: its shape, whether it is cut, and the traffic it carried."""

    node: str = NodeId
    shape: LinkShape
    cut: bool
    cut_mode: CutMode | None = Field(
        default=None, description="The kind of cut in force; none while the link is not cut."
    )
    connections: int = Field(ge=0, description="TCP connections open through the link now.")
    bytes_up: int = Field(ge=0, description="Bytes carried from the host towards the hub.")
    bytes_down: int = Field(ge=0, description="Bytes carried from the hub towards the host.")

    @model_validator(mode="after")
    def _cut_has_a_mode(self) -> LinkStatus:
        if self.cut != (self.cut_mode is not None):
            raise ValueError("cut_mode is given exactly when the link is cut")
        return self


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


class LinkCut(Message):
    """Cut a host's link to the hub; ``loud`` unless said otherwise."""

    node: str = NodeId
    mode: CutMode = Field(default="loud", description="Which kind of cut (see `LinkStatus`).")


class LinkSet(Message):
    """Give a host's link a new shape (fields left out mean no impairment)."""

    node: str = NodeId
    shape: LinkShape


LabEventKind = Literal[
    "link-set", "link-cut", "link-restored", "node-killed", "node-restarted", "services-restarted"
]


class LabEvent(Message):
    """Something the lab did to a host or its link (the kind of cut is in ``link``)."""

    node: str = NodeId
    kind: LabEventKind
    link: LinkStatus
    at: float = Field(description="Unix time, seconds.")


LAB_STATUS = CONTRACT.endpoint(
    LAB_SERVICE,
    "status",
    "mesh.lab.status",
    Empty,
    LabStatus,
    "The lab's hosts and links.",
    requesters=Party.OPERATOR,
    server=Party.OPERATOR,
)
LAB_LINK_SET = CONTRACT.endpoint(
    LAB_SERVICE,
    "link-set",
    "mesh.lab.link.set",
    LinkSet,
    LinkStatus,
    "Shape a host's link: latency, jitter, bandwidth cap, stalls.",
    requesters=Party.OPERATOR,
    server=Party.OPERATOR,
)
LAB_LINK_CUT = CONTRACT.endpoint(
    LAB_SERVICE,
    "link-cut",
    "mesh.lab.link.cut",
    LinkCut,
    LinkStatus,
    "Partition a host from the hub: loud (reset its connections, refuse new ones), silent "
    "(keep them open, drop every byte) or one way (drop what goes up or down).",
    requesters=Party.OPERATOR,
    server=Party.OPERATOR,
)
LAB_LINK_RESTORE = CONTRACT.endpoint(
    LAB_SERVICE,
    "link-restore",
    "mesh.lab.link.restore",
    NodeRef,
    LinkStatus,
    "Reconnect a host and clear every impairment of its link; connections that lost bytes "
    "to a silent or one-way cut are reset, so both sides reconnect cleanly.",
    requesters=Party.OPERATOR,
    server=Party.OPERATOR,
)
LAB_NODE_KILL = CONTRACT.endpoint(
    LAB_SERVICE,
    "node-kill",
    "mesh.lab.node.kill",
    NodeRef,
    HostStatus,
    "Kill a host's processes (SIGKILL), as a power cut would.",
    requesters=Party.OPERATOR,
    server=Party.OPERATOR,
)
LAB_NODE_RESTART = CONTRACT.endpoint(
    LAB_SERVICE,
    "node-restart",
    "mesh.lab.node.restart",
    NodeRef,
    HostStatus,
    "Start a host's processes again (after a kill, or stop and start).",
    requesters=Party.OPERATOR,
    server=Party.OPERATOR,
)
LAB_SERVICES_RESTART = CONTRACT.endpoint(
    LAB_SERVICE,
    "services-restart",
    "mesh.lab.node.services-restart",
    NodeRef,
    HostStatus,
    "Start a host's services that are not running (its leaf stays as it is): the lab's "
    "actuator for the decision service's restart-services action, so any host may ask.",
    requesters=Party.ANY_HOST,
    server=Party.OPERATOR,
)
LAB_SHUTDOWN = CONTRACT.endpoint(
    LAB_SERVICE,
    "shutdown",
    "mesh.lab.shutdown",
    Empty,
    Empty,
    "Tear the whole lab down; the reply comes before the hub goes away.",
    requesters=Party.OPERATOR,
    server=Party.OPERATOR,
)
LAB_EVENTS = CONTRACT.event(
    "mesh.lab.events.{node}",
    LabEvent,
    "The lab changed a host or its link.",
    publisher=Party.OPERATOR,
    claim="node",
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
    instance: str = Field(
        default="",
        max_length=64,
        description="The announcing discovery instance: two with one node id are a conflict.",
    )


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
    duplicates: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Node ids announced by more than one live instance, with those instances.",
    )
    refused: int = Field(
        default=0,
        ge=0,
        description="Records refused: under another node's key, or started in the future.",
    )


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
    publisher=Party.NAMED_HOST,
    claim="observer",
)
SERVICE_BEATS = CONTRACT.event(
    "mesh.host.{node}.beats",
    ServiceBeat,
    "Every service's heartbeat to its host's discovery.",
    publisher=Party.NAMED_HOST,
    readers=Party.NAMED_HOST,
    claim="node",
)
DISCOVERY_PEERS = CONTRACT.endpoint(
    DISCOVERY_SERVICE,
    "peers",
    "mesh.discovery.{node}.peers",
    PeerQuery,
    PeerList,
    "The peers a host knows, optionally only those with a capability.",
    reply_claim="observer",
)
DISCOVERY_PICK = CONTRACT.endpoint(
    DISCOVERY_SERVICE,
    "pick",
    "mesh.discovery.{node}.pick",
    PeerQuery,
    PeerPick,
    "The least-loaded peer with a capability: the mesh's load balancer.",
    reply_claim="observer",
)
PEERS_KEYS = CONTRACT.bucket(
    PEERS_BUCKET, ("{node}",), "Each host writes only its own announcement, under its id."
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
    reply_claim="node",
)
HEALTH_LINKS = CONTRACT.endpoint(
    HEALTH_SERVICE,
    "links",
    "mesh.health.{node}.links",
    Empty,
    LinkList,
    "A host's links as its monitor measures them.",
    reply_claim="node",
)
HEALTH_HOST = CONTRACT.endpoint(
    HEALTH_SERVICE,
    "host",
    "mesh.health.{node}.host",
    Empty,
    HostHealth,
    "A host's overall health: worst link state, links, interfaces, sources.",
    reply_claim="node",
)
LINK_CHANGES = CONTRACT.event(
    "mesh.health.{node}.link",
    LinkChange,
    "A link from this host changed state or score.",
    publisher=Party.NAMED_HOST,
    claim="link.source",
)
LINKS_KEYS = CONTRACT.bucket(
    LINKS_BUCKET, ("{node}.*",), "Each host writes only the links it measures: source.target."
)


# --- consensus: Raft among the hosts, a decision log and a linearizable key-value store -----

CONSENSUS_SERVICE = "meshmind-consensus"

ConsensusKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=256,
        pattern=r"^[A-Za-z0-9_=/-]([A-Za-z0-9_=/.-]*[A-Za-z0-9_=/-])?$",
        description="A key: letters, digits and `_ = / - .` (not first or last).",
    ),
]
ConsensusValue = Annotated[str, Field(max_length=64 * 1024, description="A value, at most 64 KiB.")]
MAX_PROPOSAL_BYTES = 96 * 1024
"""The largest request a consensus write endpoint accepts; larger ones are refused (413)."""


class RaftBatch(Message):
    """Raft messages from one host to one other, sent together (one NATS message per peer and
    flush). Each item is one Raft message in the consensus library's wire encoding (msgpack);
    every item's sender must be ``node``, its recipient ``peer``."""

    node: str = NodeId
    peer: str = NodeId
    messages: list[bytes] = Field(max_length=4096, description="Encoded Raft messages, in order.")


class ConsensusRequest(Message):
    """A request any host's consensus service takes; one that is not the leader passes it to
    the leader, marked ``forwarded`` so that it is never passed on twice."""

    forwarded: bool = Field(
        default=False, description="Set by the host that passed the request to the leader."
    )


class KvEntryInfo(Message):
    """A key's value as of a linearizable read; ``value`` is null when the key has none."""

    key: ConsensusKey
    value: str | None
    revision: int = Field(ge=0, description="The store's revision of the key's last write; 0.")
    lease: str | None = Field(default=None, description="The holder, when the key is a lease.")


class KvKey(ConsensusRequest):
    """Names one key."""

    key: ConsensusKey


class KvPut(ConsensusRequest):
    """Write ``value`` under ``key``."""

    key: ConsensusKey
    value: ConsensusValue


class KvCas(ConsensusRequest):
    """Write ``value`` only if the key holds ``expected`` now (null: the key must be absent);
    with ``expected_revision``, only if that is still the key's revision (0: absent).

    With ``log_record``, a write that succeeds also appends that record to the decision log,
    in the same commit, once per ``log_key``: a key and its log entry are never one without
    the other."""

    key: ConsensusKey
    expected: ConsensusValue | None = None
    expected_revision: int | None = Field(default=None, ge=0)
    value: ConsensusValue
    log_record: ConsensusValue | None = Field(
        default=None, description="Appended to the decision log when the write succeeds."
    )
    log_key: Name | None = Field(
        default=None, description="The log record's idempotency key (with `log_record`)."
    )

    @model_validator(mode="after")
    def _log_record_has_a_key(self) -> KvCas:
        if (self.log_record is None) != (self.log_key is None):
            raise ValueError("log_record and log_key go together")
        return self


class KvWrite(Message):
    """The outcome of a write: ``ok`` false when a cas found another value or a lease holds the
    key (then ``value`` and ``revision`` are the key's current ones), or a delete found nothing.
    A key held by a lease changes only through the lease endpoint."""

    key: ConsensusKey
    ok: bool
    revision: int = Field(ge=0, description="The key's revision after the write (or now).")
    value: str | None = Field(default=None, description="The key's value after the write.")
    seq: int | None = Field(
        default=None,
        ge=1,
        description="With a cas's `log_record`: the log position of the record under its "
        "`log_key`, this write's or an earlier one's; null when the log holds none.",
    )
    value_omitted: bool = Field(
        default=False,
        description="In a batch's reply: `value` was left out to keep the reply within the "
        "bus's payload (read the key for it).",
    )


KvWriteOp = Literal["put", "cas", "delete"]
MAX_BATCH_WRITES = 256
"""The most writes one batch request carries."""


class KvBatchWrite(Message):
    """One write of a batch: a put (``value``), a cas (``value`` if the key holds ``expected``,
    or has ``expected_revision``, as in :class:`KvCas`) or a delete (neither)."""

    op: KvWriteOp
    key: ConsensusKey
    value: ConsensusValue | None = None
    expected: ConsensusValue | None = None
    expected_revision: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _fields_fit_the_op(self) -> KvBatchWrite:
        if (self.value is None) != (self.op == "delete"):
            raise ValueError("a put or cas carries a value, a delete none")
        if self.op != "cas" and (self.expected is not None or self.expected_revision is not None):
            raise ValueError("only a cas expects a value or revision")
        return self


class KvBatch(ConsensusRequest):
    """Several writes in one request, each acknowledged on its own. Writes to one key take
    effect in the order given; writes to different keys as if sent at once (the ``raft``
    backend commits the whole batch as one log entry, in order)."""

    writes: list[KvBatchWrite] = Field(min_length=1, max_length=MAX_BATCH_WRITES)


MAX_BATCH_REPLY_VALUE_BYTES = 256 * 1024
"""The most value bytes a batch's reply carries; values past it are left out."""


class KvBatchResult(Message):
    """Each write's outcome, in the order of the request; past
    :data:`MAX_BATCH_REPLY_VALUE_BYTES` of values, an outcome's value is left out."""

    writes: list[KvWrite]


LeaseAction = Literal["grant", "renew", "release"]


class LeaseRequest(ConsensusRequest):
    """Grant a lease on ``key`` to ``holder`` for ``ttl_s`` (only while the key is absent or
    the holder's lease already), renew it (its holder only), or release it (its holder only).
    A lease holds its key: the key's value is the holder until the lease expires or is
    released, and then the key is gone."""

    action: LeaseAction
    key: ConsensusKey
    holder: Name
    ttl_s: float = Field(default=10.0, gt=0, le=86_400)


class LeaseState(Message):
    """A lease after a request: ``ok`` false when someone else holds it (named in ``holder``)
    or, for renew and release, when the requester does not hold it."""

    key: ConsensusKey
    ok: bool
    holder: str | None = Field(description="Who holds the lease now; null when nobody.")
    expires_at: float | None = Field(
        default=None, description="Unix time the lease expires, as the log's clock says."
    )


class DecisionProposal(ConsensusRequest):
    """Append ``record`` to the decision log once: a retry with the same ``idempotency_key``
    returns the first append's sequence number."""

    record: ConsensusValue
    idempotency_key: Name


class DecisionAck(Message):
    """Where a decision sits in the log."""

    seq: int = Field(ge=1, description="The decision's position in the log, from 1.")
    duplicate: bool = Field(description="An earlier proposal with this key was appended.")


class DecisionQuery(ConsensusRequest):
    """Decisions after sequence number ``after``, at most ``limit``."""

    after: int = Field(default=0, ge=0)
    limit: int = Field(default=100, ge=1, le=1000)


class Decision(Record):
    """One committed decision."""

    seq: int = Field(ge=1)
    record: str
    idempotency_key: str
    at: float = Field(description="Unix time the leader assigned when it was proposed.")


class DecisionList(Message):
    """A page of the decision log, in order."""

    decisions: list[Decision]
    last_seq: int = Field(ge=0, description="The log's last sequence number.")


class StoredValue(Message):
    """A key's value as the ``jetstream`` backend keeps it in the hub bucket
    ``mesh-consensus``; a lease is a value naming its holder, with its time to live counted
    from the hub's time of the write."""

    value: str
    lease_holder: str | None = None
    lease_ttl_s: float | None = None
    log_record: str | None = Field(
        default=None,
        description="A cas's log record, kept with the write so that whoever finds the write "
        "can finish its append to the decision log.",
    )
    log_key: str | None = None


class StoredDecision(Message):
    """A decision as the ``jetstream`` backend keeps it in the hub stream ``MESH_DECISIONS``."""

    record: str
    idempotency_key: str


class ConsensusMember(Record):
    """One member of the consensus group."""

    node: str = NodeId
    voter: bool = Field(description="A voter; false: a learner (receives the log, no vote).")
    match_index: int | None = Field(
        default=None, description="How far its log is known to match the leader's (leader only)."
    )


class ConsensusStatus(Message):
    """One host's consensus service as it sees the group."""

    node: str = NodeId
    backend: Literal["raft", "jetstream", "local"] = Field(
        description="raft or jetstream; local: a single in-process replica, for tests."
    )
    role: str = Field(description="leader, follower, candidate, pre-candidate; or client.")
    term: int = Field(ge=0)
    leader: str | None
    commit_index: int = Field(ge=0)
    applied_index: int = Field(ge=0)
    members: list[ConsensusMember]
    rejected: dict[str, int] = Field(
        default_factory=dict,
        description="Inbound Raft messages refused since start, by reason (malformed, "
        "impersonation: a sender other than the subject's host, misaddressed, invalid_batch).",
    )


MemberAction = Literal["add-voter", "add-learner", "remove"]


class MemberChange(Message):
    """Add a voter (or promote a learner), add a learner, or remove a member."""

    action: MemberAction
    node: str = NodeId


class TransferRequest(Message):
    """Hand leadership to voter ``to``."""

    to: str = NodeId


class AppliedEntry(Record):
    """One log entry as a host applied it."""

    index: int = Field(ge=1)
    term: int = Field(ge=0)
    op: str = Field(description="put, cas, delete, lease, decision, tick, config or noop.")
    key: str | None = None
    ok: bool = True
    revision: int | None = None


class CommittedEntries(Message):
    """What a host applied from the log, in order."""

    node: str = NodeId
    entries: list[AppliedEntry]


_Q = TypeVar("_Q", bound=Message)
_R = TypeVar("_R", bound=Message)


def _consensus_endpoint(
    name: str,
    request: type[_Q],
    reply: type[_R],
    summary: str,
    *,
    reply_claim: str | None = None,
) -> EndpointSpec[_Q, _R]:
    return CONTRACT.endpoint(
        CONSENSUS_SERVICE,
        name,
        f"mesh.consensus.{{node}}.{name}",
        request,
        reply,
        summary,
        max_request_bytes=MAX_PROPOSAL_BYTES,
        reply_claim=reply_claim,
    )


RAFT_MESSAGES = CONTRACT.event(
    "mesh.raft.{node}.to.{peer}",
    RaftBatch,
    "Raft messages from host `node` to host `peer`, batched per peer.",
    publisher=Party.NAMED_HOST,
    claim="node",
)
CONSENSUS_COMMITTED = CONTRACT.event(
    "mesh.consensus.{node}.committed",
    CommittedEntries,
    "The entries a host's consensus service applied, so its host's services can follow.",
    publisher=Party.NAMED_HOST,
    claim="node",
)
CONSENSUS_PROPOSE = _consensus_endpoint(
    "propose",
    DecisionProposal,
    DecisionAck,
    "Append a decision to the log, once per idempotency key (any host: forwarded to the leader).",
)
CONSENSUS_LOG = _consensus_endpoint(
    "log", DecisionQuery, DecisionList, "Read the decision log (linearizable)."
)
CONSENSUS_GET = _consensus_endpoint(
    "get", KvKey, KvEntryInfo, "Read a key, linearizably (ReadIndex on the leader)."
)
CONSENSUS_PUT = _consensus_endpoint("put", KvPut, KvWrite, "Write a key.")
CONSENSUS_CAS = _consensus_endpoint(
    "cas", KvCas, KvWrite, "Write a key if it holds the expected value or revision."
)
CONSENSUS_DELETE = _consensus_endpoint("delete", KvKey, KvWrite, "Delete a key.")
CONSENSUS_BATCH = _consensus_endpoint(
    "batch",
    KvBatch,
    KvBatchResult,
    "Several puts, cases and deletes in one request; each key's in the order given.",
)
CONSENSUS_LEASE = _consensus_endpoint(
    "lease",
    LeaseRequest,
    LeaseState,
    "Grant, renew or release a lease; it expires at a time the leader commits to the log.",
)
CONSENSUS_STATUS = _consensus_endpoint(
    "status",
    Empty,
    ConsensusStatus,
    "Term, leader, role, commit and applied index, members as this host sees them.",
    reply_claim="node",
)
CONSENSUS_MEMBERS = _consensus_endpoint(
    "members", MemberChange, ConsensusStatus, "Add or remove a voter or learner, one at a time."
)
CONSENSUS_TRANSFER = _consensus_endpoint(
    "transfer", TransferRequest, ConsensusStatus, "Hand leadership to another voter."
)


CONSENSUS_BUCKET = CONTRACT.shared_store(
    "mesh-consensus",
    StoreKind.KV,
    "The `jetstream` backend's keys and leases; every write carries the revision it read.",
)
CONSENSUS_STREAM = CONTRACT.shared_store(
    "MESH_DECISIONS",
    StoreKind.STREAM,
    "The `jetstream` backend's decision log: one subject per idempotency key, appended only "
    "while it is empty.",
    subject_prefix="meshmind-decisions",
)


# --- decision: the MAPE-K loop, agreed decisions, diffusing computations ------------------

DECISION_SERVICE = "meshmind-decision"

AnomalyKind = Literal[
    "host-gone",
    "link-degraded",
    "link-down",
    "partition-suspected",
    "host-overloaded",
    "voter-bad-link",
    "trainer-failing",
]
DecisionAction = Literal[
    "restart-services",
    "transfer-leadership",
    "demote-voter",
    "promote-voter",
    "reset-interface",
    "exclude-trainer",
    "wait",
]
AnomalySubject = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)?$",
        max_length=129,
        description="A host, or a directed link `source.target`.",
    ),
]
Episode = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_-]([A-Za-z0-9_.-]*[A-Za-z0-9_-])?$",
        max_length=64,
        description="What tells this occurrence from the next: every host derives the same.",
    ),
]


class EvidenceItem(Record):
    """One observation an anomaly rests on: who saw what, and when."""

    observer: str = NodeId
    what: str = Field(max_length=512)
    at: float = Field(description="Unix time, seconds.")


class AnomalyInfo(Record):
    """An anomaly with its evidence; its mesh-wide key is `kind/subject/episode`."""

    kind: AnomalyKind
    subject: AnomalySubject
    episode: Episode
    evidence: list[EvidenceItem] = Field(default_factory=list, max_length=32)


class VoteInfo(Record):
    """One host's judgement of a proposal, with its reason."""

    voter: str = NodeId
    approve: bool
    reason: str = Field(max_length=512)


class DecisionRecord(Message):
    """An agreed decision as committed under `decision/anomaly/<key>` and in the decision log;
    the executor adds `executed` and `outcome` as they happen."""

    key: str = Field(max_length=256, description="The anomaly's key: kind/subject/episode.")
    anomaly: AnomalyInfo
    action: DecisionAction
    target: str = NodeId
    ranking: list[DecisionAction] = Field(max_length=16, description="Candidates, best first.")
    proposer: str = NodeId
    executor: str = Field(
        pattern=r"^[A-Za-z0-9_-]+$", description="Who executes it: the proposer that won the cas."
    )
    votes: list[VoteInfo] = Field(max_length=256)
    quorum: int = Field(ge=1, description="Approvals needed: a majority of the membership.")
    members: list[str] = Field(max_length=256, description="The membership the quorum counts.")
    decided_at: float = Field(description="Unix time the proposer committed it.")
    seq: int | None = Field(default=None, ge=1, description="Its place in the decision log.")
    executed: str | None = Field(
        default=None, max_length=1024, description="What the actuator did (or would do)."
    )
    outcome: Literal["cleared", "persisted", "failed"] | None = Field(
        default=None, description="Whether the anomaly cleared within the deadline."
    )
    taken_over_from: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The executor that departed leaving this decision without an outcome; "
        "`executor` took it over.",
    )


class DecideRequest(Message):
    """`make_decision(context, timeout_ms)`: analyse, plan, agree and commit for ``context``.
    Without an episode the anomaly is the one this host sees now, or a new occurrence."""

    kind: AnomalyKind
    subject: AnomalySubject
    episode: Episode | None = None
    evidence: list[EvidenceItem] = Field(default_factory=list, max_length=32)
    timeout_ms: int = Field(default=5000, ge=10, le=120_000)


class VoteRequest(Message):
    """A proposal for another host's decision service to judge with its own view."""

    proposer: str = NodeId
    anomaly: AnomalyInfo
    action: DecisionAction
    target: str = NodeId


class VoteReply(Message):
    """A vote; ``voter`` must be the host asked."""

    voter: str = NodeId
    approve: bool
    reason: str = Field(max_length=512)


DecisionEventKind = Literal[
    "proposed", "committed", "taken-over", "executed", "outcome", "rejected"
]


class DecisionEvent(Message):
    """A step of one decision, published by the host that took it."""

    node: str = NodeId
    kind: DecisionEventKind
    record: DecisionRecord
    at: float


class DecisionHistoryQuery(Message):
    """Committed decisions after log position ``after``, at most ``limit``."""

    after: int = Field(default=0, ge=0)
    limit: int = Field(default=100, ge=1, le=1000)


class DecisionHistory(Message):
    """Committed decisions with their evidence and, once known, their outcomes."""

    node: str = NodeId
    decisions: list[DecisionRecord]
    last_seq: int = Field(ge=0)


class SweepHostReport(Record):
    """One engaged host's part in a sweep: its own health as it checked it."""

    node: str = NodeId
    state: Literal["good", "degraded", "down", "unknown"]
    detail: str = Field(default="", max_length=512)
    parent: str | None = Field(default=None, description="Who engaged it; none for the root.")


SweepComputation = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]+$", max_length=64)]


class SweepWork(Message):
    """A work message of a diffusing computation (Dijkstra-Scholten): retransmitted until its
    receipt arrives; the recipient filters duplicates by (sender, msg_id)."""

    computation: SweepComputation
    sender: str = NodeId
    recipient: str = NodeId
    msg_id: int = Field(ge=1)


class SweepSignal(Message):
    """The acknowledgement of work message ``acks``; a detaching host's signal to its parent
    carries the reports of its subtree. Retransmitted until its receipt arrives."""

    computation: SweepComputation
    sender: str = NodeId
    recipient: str = NodeId
    acks: int = Field(ge=1)
    reports: list[SweepHostReport] = Field(default_factory=list, max_length=4096)


class SweepReceipt(Message):
    """Receipt of a work message or a signal, which stops its retransmission."""

    computation: SweepComputation
    sender: str = NodeId
    recipient: str = NodeId
    of: Literal["work", "signal"]
    msg_id: int = Field(ge=1)


class SweepRequest(Message):
    """Start a mesh-wide health sweep here and wait for its termination."""

    timeout_ms: int = Field(default=10_000, ge=10, le=120_000)


class SweepResult(Message):
    """A finished sweep, announced only once every engaged host was done."""

    node: str = NodeId
    computation: SweepComputation
    reports: list[SweepHostReport]
    duration_s: float = Field(ge=0)
    messages: int = Field(
        ge=0, description="Messages the initiator sent since it started, retransmissions too."
    )


DECISION_DECIDE = CONTRACT.endpoint(
    DECISION_SERVICE,
    "decide",
    "mesh.decision.{node}.decide",
    DecideRequest,
    DecisionRecord,
    "make_decision(context, timeout_ms): analyse, plan, vote, commit; the committed decision "
    "(the first one when the anomaly was decided already), 409 when not agreed, 504 on timeout.",
    max_request_bytes=64 * 1024,
)
DECISION_VOTE = CONTRACT.endpoint(
    DECISION_SERVICE,
    "vote",
    "mesh.decision.{node}.vote",
    VoteRequest,
    VoteReply,
    "Judge another host's proposal with this host's own view of the evidence.",
    max_request_bytes=64 * 1024,
    reply_claim="voter",
)
DECISION_HISTORY = CONTRACT.endpoint(
    DECISION_SERVICE,
    "history",
    "mesh.decision.{node}.history",
    DecisionHistoryQuery,
    DecisionHistory,
    "Committed decisions from the decision log, with evidence, votes and outcomes.",
    reply_claim="node",
)
DECISION_SWEEP = CONTRACT.endpoint(
    DECISION_SERVICE,
    "sweep",
    "mesh.decision.{node}.sweep",
    SweepRequest,
    SweepResult,
    "Start a mesh-wide health sweep (a diffusing computation); reply once it terminated.",
    reply_claim="node",
)
DECISION_EVENTS = CONTRACT.event(
    "mesh.decision.{node}.events",
    DecisionEvent,
    "A decision proposed, committed, executed, its outcome, or a proposal not agreed.",
    publisher=Party.NAMED_HOST,
    claim="node",
)
SWEEP_WORK = CONTRACT.event(
    "mesh.sweep.{sender}.work.{recipient}",
    SweepWork,
    "Work of a diffusing computation from host `sender` to host `recipient`.",
    publisher=Party.NAMED_HOST,
    claim="sender",
)
SWEEP_SIGNALS = CONTRACT.event(
    "mesh.sweep.{sender}.signal.{recipient}",
    SweepSignal,
    "Dijkstra-Scholten acknowledgements from host `sender` to host `recipient`.",
    publisher=Party.NAMED_HOST,
    claim="sender",
)
SWEEP_RECEIPTS = CONTRACT.event(
    "mesh.sweep.{sender}.receipt.{recipient}",
    SweepReceipt,
    "Receipts from host `sender` for the work and signals host `recipient` sent it.",
    publisher=Party.NAMED_HOST,
    claim="sender",
)


# --- federated learning: jobs, rounds, updates, metrics --------------------------------------

FL_COORDINATOR_SERVICE = "meshmind-fl-coordinator"
FL_TRAINER_SERVICE = "meshmind-fl-trainer"
FL_STORE = "mesh-fl"
"""The hub's object store of adapters (global versions, trainers' updates) and checkpoints."""
FL_OBJECTS = CONTRACT.shared_store(
    FL_STORE,
    StoreKind.OBJECTS,
    "Adapters, trainers' updates and checkpoints; an update counts only when the digest its "
    "trainer published on its own subject matches.",
)
FL_LEASE_PREFIX = "fl/job/"
"""Consensus lease ``fl/job/<id>/coordinator``: the one active coordinator of a job."""
FL_EXCLUDED_PREFIX = "fl/excluded/"
"""Consensus key ``fl/excluded/<node>``: while it holds a value, no coordinator selects host
``<node>`` as a trainer. The decision service's ``exclude-trainer`` action holds it as a lease
(holder :data:`FL_EXCLUSION_HOLDER`) for ``DECISION_EXCLUDE_TTL_S``, so the host trains again
once the lease expires; a value put by hand excludes the host until it is deleted."""
FL_EXCLUSION_HOLDER = DECISION_SERVICE
"""The holder of the exclusion leases the decision service grants: any host's decision service
extends an exclusion by granting it again."""

JobId = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="A job's id: letters, digits, `_`, `-`."),
]
Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the bytes.")]
ObjectName = Annotated[
    str, Field(min_length=1, max_length=256, description="An object in the `mesh-fl` store.")
]
StrategyName = Literal["fedavg", "fedprox", "fedadam", "trimmed-mean", "krum"]
Weighting = Literal["examples", "link"]
FlMode = Literal["sync", "buffered"]
JobState = Literal["running", "done", "failed"]


class FlJobSpec(Message):
    """A federated job as `meshctl fl start` asks for it; every field is plain data."""

    job_id: JobId | None = Field(default=None, description="Given by the coordinator if absent.")
    task: Name = Field(default="digits", description="A registered task, e.g. digits.")
    rounds: int = Field(default=10, ge=1, le=10_000, description="Aggregations to run.")
    participants: int = Field(default=5, ge=1, le=1000, description="Trainers per round.")
    min_updates: int = Field(
        default=1, ge=1, le=1000, description="Updates a round needs by its deadline to count."
    )
    strategy: StrategyName = "fedavg"
    weighting: Weighting = Field(
        default="examples", description="link: link quality scales each update's weight."
    )
    mode: FlMode = Field(
        default="sync", description="sync: rounds with a deadline; buffered: FedBuff."
    )
    deadline_s: float = Field(default=20.0, gt=0, le=86_400, description="A round's deadline.")
    epochs: int = Field(default=2, ge=1, le=1000, description="Local epochs per round.")
    lr: float = Field(default=1e-2, gt=0, le=10, description="Local learning rate.")
    proximal_mu: float = Field(default=0.01, gt=0, le=100, description="FedProx's mu.")
    seed: int = Field(default=0, ge=0, description="Model and partition seed.")
    label_skew: float | None = Field(
        default=None,
        gt=0,
        le=10_000,
        description="Dirichlet concentration of the hosts' shares of a packaged data set "
        "(digits): small is skewed, large near even; none: the task's own (digits: 0.5).",
    )
    max_update_norm: float = Field(
        default=20.0, gt=0, description="Updates further than this from the global are refused."
    )
    buffer_size: int | None = Field(
        default=None, ge=1, le=1000, description="Buffered mode: updates per aggregation."
    )
    max_staleness: int = Field(
        default=4,
        ge=0,
        le=1000,
        description="Buffered mode: an update older than this many versions no longer counts.",
    )
    remember: bool = Field(
        default=False,
        description="Buffered mode: every version counts each trainer's latest update, not "
        "only the buffer's (as MIFA does), so hosts behind slow links keep counting.",
    )


INLINE_ADAPTER_BYTES = 64 * 1024
"""An adapter at most this large travels inside its round's announcement or update report."""


class FlRoundAnnouncement(Message):
    """A round (or, buffered, a piece of work) for the trainers it names."""

    job_id: JobId
    coordinator: str = NodeId
    round: int = Field(ge=1, description="The round these updates count for.")
    version: int = Field(ge=0, description="The global adapter's version to train from.")
    task: Name
    adapter: ObjectName = Field(description="The global adapter in the `mesh-fl` store.")
    sha256: Digest
    adapter_data: bytes | None = Field(
        default=None,
        max_length=INLINE_ADAPTER_BYTES,
        description="The global adapter's bytes too, when it is at most 64 KiB: a trainer "
        "whose copy matches `sha256` need not fetch it from the store.",
    )
    deadline: float = Field(description="Unix time after which an update may not count.")
    trainers: list[Annotated[str, NodeId]] = Field(max_length=1000)
    epochs: int = Field(ge=1)
    lr: float = Field(gt=0)
    proximal_mu: float = Field(ge=0, description="0: no proximal term.")
    seed: int = Field(ge=0)
    label_skew: float | None = Field(default=None, gt=0, le=10_000, description="As the job's.")
    max_update_norm: float = Field(gt=0)


class FlUpdateReport(Message):
    """A trainer's update: uploaded to the store, described here (and carried, if small)."""

    job_id: JobId
    node: str = NodeId
    round: int = Field(ge=1)
    base_version: int = Field(ge=0, description="The global version it trained from.")
    adapter: ObjectName = Field(description="The update in the `mesh-fl` store.")
    sha256: Digest
    adapter_data: bytes | None = Field(
        default=None,
        max_length=INLINE_ADAPTER_BYTES,
        description="The update's bytes too, when it is at most 64 KiB: a coordinator whose "
        "copy matches `sha256` need not fetch it from the store (where it may land later).",
    )
    size: int = Field(ge=0, description="The update's bytes.")
    examples: int = Field(ge=0)
    loss: float
    metrics: dict[str, float] = Field(default_factory=dict, max_length=64)


class FlRoundMetrics(Message):
    """One aggregation: what went in, how the new global adapter does, what it cost."""

    job_id: JobId
    coordinator: str = NodeId
    round: int = Field(ge=1)
    version: int = Field(ge=1, description="The global version this round made.")
    accuracy: float = Field(ge=0, le=1)
    loss: float
    participants: list[Annotated[str, NodeId]] = Field(max_length=1000)
    weights: dict[str, float] = Field(description="Each participant's share of the aggregate.")
    link_quality: dict[str, float] = Field(description="The link score behind each weight.")
    examples: dict[str, int] = Field(description="Examples each participant trained on.")
    staleness: dict[str, int] = Field(default_factory=dict, description="Buffered mode.")
    rejected: dict[str, str] = Field(default_factory=dict, description="Refused, and why.")
    selected: list[Annotated[str, NodeId]] = Field(
        max_length=1000,
        description="The trainers asked; never a host excluded under `fl/excluded/<node>`.",
    )
    bytes_down: int = Field(ge=0, description="Adapter bytes sent to trainers.")
    bytes_up: int = Field(ge=0, description="Update bytes received from trainers.")
    wall_s: float = Field(ge=0, description="Seconds from announcement to aggregate.")
    at: float = Field(description="Unix time of the aggregation.")


FlJobEventKind = Literal["started", "resumed", "round", "rejected", "done", "failed"]


class FlJobEvent(Message):
    """A job's life as its coordinator tells it."""

    job_id: JobId
    node: str = NodeId
    kind: FlJobEventKind
    round: int = Field(default=0, ge=0)
    detail: str = Field(default="", max_length=1024)
    at: float


class FlJobStatus(Message):
    """A job as its last checkpoint has it: the checkpoint is this model, in the store."""

    job_id: JobId
    spec: FlJobSpec
    state: JobState
    coordinator: str = NodeId
    version: int = Field(ge=0, description="The latest global adapter's version.")
    adapter: ObjectName
    sha256: Digest
    initial_accuracy: float = Field(ge=0, le=1)
    history: list[FlRoundMetrics] = Field(max_length=10_000, description="Every round so far.")
    takeovers: int = Field(default=0, ge=0, description="Standbys that resumed the job.")
    detail: str = Field(default="", max_length=1024)
    started_at: float
    updated_at: float


class FlJobQuery(Message):
    """One job, or every job when ``job_id`` is null."""

    job_id: JobId | None = None


class FlJobList(Message):
    """Jobs, newest first."""

    jobs: list[FlJobStatus]


FL_START = CONTRACT.endpoint(
    FL_COORDINATOR_SERVICE,
    "start",
    "mesh.fl.{node}.start",
    FlJobSpec,
    FlJobStatus,
    "Start a job: this host's coordinator checkpoints it and runs it while it holds its lease.",
)
FL_STATUS = CONTRACT.endpoint(
    FL_COORDINATOR_SERVICE,
    "status",
    "mesh.fl.{node}.status",
    FlJobQuery,
    FlJobList,
    "Jobs as their last checkpoints have them, with every round's metrics.",
)
FL_ROUNDS = CONTRACT.event(
    "mesh.fl.{coordinator}.rounds",
    FlRoundAnnouncement,
    "A coordinator hands a round to the trainers it names.",
    publisher=Party.NAMED_HOST,
    claim="coordinator",
)
FL_UPDATES = CONTRACT.event(
    "mesh.fl.{node}.updates",
    FlUpdateReport,
    "A trainer's update for a round: carried when small, put in the store.",
    publisher=Party.NAMED_HOST,
    claim="node",
)
FL_METRICS = CONTRACT.event(
    "mesh.fl.{coordinator}.metrics",
    FlRoundMetrics,
    "A round's aggregate: accuracy, loss, participants, weights and links, bytes moved.",
    publisher=Party.NAMED_HOST,
    claim="coordinator",
)
FL_JOB_EVENTS = CONTRACT.event(
    "mesh.fl.{node}.jobs",
    FlJobEvent,
    "A job started, resumed on a standby, finished a round, refused an update, ended.",
    publisher=Party.NAMED_HOST,
    claim="node",
)
