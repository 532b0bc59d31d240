"""Consensus: the replicated decision log and key-value store, over Raft or JetStream."""

from meshmind.consensus._backend import BackendName, ConsensusBackend, NotSupported, Unavailable
from meshmind.consensus._batch_reply import batch_reply
from meshmind.consensus._commands import (
    AppendDecision,
    BadCommand,
    Batch,
    Cas,
    Command,
    Delete,
    LeaseGrant,
    LeaseRelease,
    LeaseRenew,
    Put,
    Tick,
    decode_command,
    encode_command,
)
from meshmind.consensus._driver import DriverSettings, ProposalLost, RaftDriver, StorageFailed
from meshmind.consensus._jetstream_backend import JetStreamBackend
from meshmind.consensus._local import LocalStore
from meshmind.consensus._model import Decision, Lease, Result, Status, VersionedValue
from meshmind.consensus._raft_backend import RaftBackend, RaftBackendSettings
from meshmind.consensus._state import StoreState
from meshmind.consensus._wire import WireError, decode_message, encode_message
from meshmind.consensus._writer import BatchingWriter

__all__ = [
    "AppendDecision",
    "BackendName",
    "BadCommand",
    "Batch",
    "BatchingWriter",
    "Cas",
    "Command",
    "ConsensusBackend",
    "Decision",
    "Delete",
    "DriverSettings",
    "JetStreamBackend",
    "Lease",
    "LeaseGrant",
    "LeaseRelease",
    "LeaseRenew",
    "LocalStore",
    "NotSupported",
    "ProposalLost",
    "Put",
    "RaftBackend",
    "RaftBackendSettings",
    "RaftDriver",
    "Result",
    "Status",
    "StorageFailed",
    "StoreState",
    "Tick",
    "Unavailable",
    "VersionedValue",
    "WireError",
    "batch_reply",
    "decode_command",
    "decode_message",
    "encode_command",
    "encode_message",
]
