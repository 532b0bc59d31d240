"""The mesh bus: the only package that talks to NATS; every other package goes through it."""

from meshmind.bus._bus import Bus, ProtocolError, RawMessage, Subscription
from meshmind.bus._codec import decode, encode
from meshmind.bus._contract import (
    BucketKeys,
    Contract,
    EndpointSpec,
    EventSpec,
    Party,
    SharedStore,
    StoreKind,
    subject_matches,
)
from meshmind.bus._errors import (
    BadRequest,
    BusError,
    Disconnected,
    HubUnavailable,
    NoResponders,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    UnsupportedVersion,
)
from meshmind.bus._jetstream import (
    HubStore,
    KeyValue,
    KvEntry,
    KvSnapshot,
    KvWatch,
    ObjectInfo,
    ObjectStore,
    Stream,
    StreamRecord,
)
from meshmind.bus._logging import configure_logging, get_logger
from meshmind.bus._message import Empty, Message, Record
from meshmind.bus._redaction import MASK, redact, redact_event
from meshmind.bus._runtime import run, serve
from meshmind.bus._service import ServiceKit
from meshmind.bus._settings import INBOX_PREFIX, BusSettings, CommaList, check_node_id
from meshmind.bus._supervision import RestartBackoff, background, task_restarts
from meshmind.bus._tracing import (
    configure_tracing,
    console_exporter,
    current_trace_id,
    flush_tracing,
    installed_provider,
    traced,
)

__all__ = [
    "INBOX_PREFIX",
    "MASK",
    "BadRequest",
    "BucketKeys",
    "Bus",
    "BusError",
    "BusSettings",
    "CommaList",
    "Contract",
    "Disconnected",
    "Empty",
    "EndpointSpec",
    "EventSpec",
    "HubStore",
    "HubUnavailable",
    "KeyValue",
    "KvEntry",
    "KvSnapshot",
    "KvWatch",
    "Message",
    "NoResponders",
    "ObjectInfo",
    "ObjectStore",
    "Party",
    "PayloadTooLarge",
    "ProtocolError",
    "RawMessage",
    "Record",
    "RequestTimeout",
    "RestartBackoff",
    "ServiceError",
    "ServiceKit",
    "SharedStore",
    "StoreKind",
    "Stream",
    "StreamRecord",
    "Subscription",
    "UnsupportedVersion",
    "background",
    "check_node_id",
    "configure_logging",
    "configure_tracing",
    "console_exporter",
    "current_trace_id",
    "decode",
    "encode",
    "flush_tracing",
    "get_logger",
    "installed_provider",
    "redact",
    "redact_event",
    "run",
    "serve",
    "subject_matches",
    "task_restarts",
    "traced",
]
