"""The Raft core: a pure, deterministic consensus state machine, and its vocabulary."""

from meshmind.raft._confchange import ConfChange, ConfChangeKind, decode_conf, encode_conf
from meshmind.raft._config import RaftConfig
from meshmind.raft._errors import NotLeader, ProposalRefused, RaftError
from meshmind.raft._log import LogSafetyError
from meshmind.raft._messages import (
    Append,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    PreVote,
    PreVoteResponse,
    TimeoutNow,
    Vote,
    VoteResponse,
)
from meshmind.raft._node import RaftNode, Role
from meshmind.raft._progress import Progress, ProgressState
from meshmind.raft._ready import ReadState, Ready
from meshmind.raft._storage import DiskStorage, StorageInUse
from meshmind.raft._types import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Recovered,
    Snapshot,
    SnapshotMeta,
)
from meshmind.raft._wal import CorruptLog, TornTail

__all__ = [
    "Append",
    "AppendResponse",
    "ConfChange",
    "ConfChangeKind",
    "ConfState",
    "CorruptLog",
    "DiskStorage",
    "Entry",
    "EntryKind",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "LogSafetyError",
    "Message",
    "NotLeader",
    "PreVote",
    "PreVoteResponse",
    "Progress",
    "ProgressState",
    "ProposalRefused",
    "RaftConfig",
    "RaftError",
    "RaftNode",
    "ReadState",
    "Ready",
    "Recovered",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "StorageInUse",
    "TimeoutNow",
    "TornTail",
    "Vote",
    "VoteResponse",
    "decode_conf",
    "encode_conf",
]
