"""Commands of the replicated store and their msgpack encoding, as they travel in the Raft log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

COMMAND_VERSION = 1


class BadCommand(ValueError):
    """Bytes that do not decode to a command of this version."""


@dataclass(frozen=True, slots=True)
class Put:
    """Set a key's value."""

    key: str
    value: bytes
    at: float


@dataclass(frozen=True, slots=True)
class Cas:
    """Set a key's value if it holds ``expected`` (None: if it does not exist), or, when
    ``expected_revision`` is given, if its last write had that revision (0: does not exist)."""

    key: str
    value: bytes
    at: float
    expected: bytes | None = None
    expected_revision: int | None = None


@dataclass(frozen=True, slots=True)
class CasAppend:
    """A :class:`Cas` that, when it writes, also appends ``record`` to the decision log once
    per ``idempotency_key``: both in one entry, so neither is ever applied without the other."""

    key: str
    value: bytes
    at: float
    record: bytes
    idempotency_key: str
    expected: bytes | None = None
    expected_revision: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove a key."""

    key: str
    at: float


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """Hold ``key`` for ``holder`` until ``at + ttl``, unless someone else holds it."""

    key: str
    holder: str
    ttl: float
    at: float


@dataclass(frozen=True, slots=True)
class LeaseRenew:
    """Extend the holder's lease on ``key`` to ``at + ttl``."""

    key: str
    holder: str
    ttl: float
    at: float


@dataclass(frozen=True, slots=True)
class LeaseRelease:
    """Give up the holder's lease on ``key`` (the key goes with it)."""

    key: str
    holder: str
    at: float


@dataclass(frozen=True, slots=True)
class AppendDecision:
    """Append a record to the decision log, once per idempotency key."""

    record: bytes
    idempotency_key: str
    at: float


@dataclass(frozen=True, slots=True)
class Tick:
    """Let time pass: leases that ran out by ``at`` expire."""

    at: float


Write = Put | Cas | Delete
"""A command a batch may carry."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Writes applied one after another in one entry, each with its own result."""

    writes: tuple[Write, ...]
    at: float


Command = (
    Put
    | Cas
    | CasAppend
    | Delete
    | LeaseGrant
    | LeaseRenew
    | LeaseRelease
    | AppendDecision
    | Tick
    | Batch
)

_OPS: dict[str, type[Command]] = {
    "put": Put,
    "cas": Cas,
    "cas_append": CasAppend,
    "delete": Delete,
    "lease_grant": LeaseGrant,
    "lease_renew": LeaseRenew,
    "lease_release": LeaseRelease,
    "append_decision": AppendDecision,
    "tick": Tick,
    "batch": Batch,
}
_WRITES: tuple[type[Command], ...] = (Put, Cas, Delete)
_NAMES = {kind: name for name, kind in _OPS.items()}
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "key": (str,),
    "value": (bytes,),
    "at": (int, float),
    "expected": (bytes, type(None)),
    "expected_revision": (int, type(None)),
    "holder": (str,),
    "ttl": (int, float),
    "record": (bytes,),
    "idempotency_key": (str,),
}


def _fields(command: Command) -> dict[str, Any]:
    fields = {name: getattr(command, name) for name in command.__slots__}
    if isinstance(command, Batch):
        fields["writes"] = [_fields(write) for write in command.writes]
    return {"op": _NAMES[type(command)], **fields}


def encode_command(command: Command) -> bytes:
    """The command as it goes into a log entry."""
    packed: bytes = msgpack.packb({"v": COMMAND_VERSION, **_fields(command)}, use_bin_type=True)
    return packed


def decode_command(data: bytes) -> Command:
    """A command from a log entry; :class:`BadCommand` if it is not one."""
    try:
        raw: Any = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as error:
        raise BadCommand(f"not msgpack: {error}") from None
    if not isinstance(raw, dict):
        raise BadCommand("a command is a map")
    if raw.pop("v", None) != COMMAND_VERSION:
        raise BadCommand(f"unsupported command version (this store reads {COMMAND_VERSION})")
    return _decode_fields(raw, _OPS)


def _decode_batch(raw: dict[str, Any]) -> Batch:
    writes = raw.pop("writes", None)
    if not isinstance(writes, list):
        raise BadCommand("batch.writes is a list")
    allowed = {_NAMES[kind]: kind for kind in _WRITES}
    decoded = []
    for write in writes:
        if not isinstance(write, dict):
            raise BadCommand("a batch's write is a map")
        command = _decode_fields(write, allowed)
        assert isinstance(command, Put | Cas | Delete)
        decoded.append(command)
    at = raw.pop("at", None)
    if raw or isinstance(at, bool) or not isinstance(at, int | float):
        raise BadCommand("a batch has writes and a time, nothing else")
    return Batch(tuple(decoded), at)


def _decode_fields(raw: dict[str, Any], ops: dict[str, type[Command]]) -> Command:
    op = raw.pop("op", None)
    kind = ops.get(op) if isinstance(op, str) else None
    if kind is None:
        raise BadCommand("unknown command")
    if kind is Batch:
        return _decode_batch(raw)
    for name, value in raw.items():
        allowed = _FIELD_TYPES.get(name)
        if allowed is None or name not in kind.__slots__:
            raise BadCommand(f"{_NAMES[kind]} has no field {name!r}")
        if isinstance(value, bool) or not isinstance(value, allowed):
            raise BadCommand(f"{_NAMES[kind]}.{name} has the wrong type")
    try:
        return kind(**raw)
    except TypeError as error:
        raise BadCommand(f"{_NAMES[kind]}: {error}") from None
