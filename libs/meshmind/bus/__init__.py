"""The mesh bus: the only package that talks to NATS; every other package goes through it."""

from meshmind.bus._bus import Bus, ProtocolError, RawMessage, Subscription
from meshmind.bus._codec import decode, encode
from meshmind.bus._contract import Contract, EndpointSpec, EventSpec, subject_matches
from meshmind.bus._errors import (
    BadRequest,
    BusError,
    HubUnavailable,
    NoResponders,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    UnsupportedVersion,
)
from meshmind.bus._jetstream import HubStore, KeyValue, KvEntry, ObjectInfo, ObjectStore
from meshmind.bus._logging import configure_logging, get_logger
from meshmind.bus._message import Empty, Message, Record
from meshmind.bus._runtime import background, run, serve
from meshmind.bus._service import ServiceKit
from meshmind.bus._settings import BusSettings, CommaList, check_node_id
from meshmind.bus._tracing import configure_tracing, console_exporter, current_trace_id

__all__ = [
    "BadRequest",
    "Bus",
    "BusError",
    "BusSettings",
    "CommaList",
    "Contract",
    "Empty",
    "EndpointSpec",
    "EventSpec",
    "HubStore",
    "HubUnavailable",
    "KeyValue",
    "KvEntry",
    "Message",
    "NoResponders",
    "ObjectInfo",
    "ObjectStore",
    "PayloadTooLarge",
    "ProtocolError",
    "RawMessage",
    "Record",
    "RequestTimeout",
    "ServiceError",
    "ServiceKit",
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
    "get_logger",
    "run",
    "serve",
    "subject_matches",
]
