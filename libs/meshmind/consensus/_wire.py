"""Raft messages on the wire: each one a msgpack array, decoded with every field checked."""

from __future__ import annotations

from typing import Any

import msgpack

from meshmind.bus import check_node_id
from meshmind.raft import (
    Append,
    AppendResponse,
    ConfState,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    PreVote,
    PreVoteResponse,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
    Vote,
    VoteResponse,
)

_KINDS: tuple[type[Message], ...] = (
    PreVote,
    PreVoteResponse,
    Vote,
    VoteResponse,
    Append,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    TimeoutNow,
)
_CODE = {kind: code for code, kind in enumerate(_KINDS)}


class WireError(ValueError):
    """Bytes that are not a well-formed Raft message."""


def _entry(entry: Entry) -> list[Any]:
    return [entry.term, entry.index, int(entry.kind), entry.data]


def _snapshot(snapshot: Snapshot) -> list[Any]:
    meta = snapshot.meta
    conf = meta.conf
    return [meta.index, meta.term, sorted(conf.voters), sorted(conf.learners), snapshot.data]


def encode_message(message: Message) -> bytes:
    """The wire bytes of ``message``."""
    fields: list[Any] = [_CODE[type(message)], message.sender, message.recipient, message.term]
    match message:
        case PreVote() | Vote():
            fields += [message.last_index, message.last_term]
            if isinstance(message, Vote):
                fields.append(message.transfer)
        case PreVoteResponse() | VoteResponse():
            fields.append(message.granted)
        case Append():
            entries = [_entry(e) for e in message.entries]
            fields += [message.prev_index, message.prev_term, entries, message.commit]
        case AppendResponse():
            hint = [message.reject_hint, message.hint_term]
            fields += [message.index, message.reject, *hint]
        case Heartbeat():
            fields += [message.commit, message.context]
        case HeartbeatResponse():
            fields.append(message.context)
        case InstallSnapshot():
            fields.append(_snapshot(message.snapshot))
        case TimeoutNow():
            pass
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def _int(value: object) -> int:
    if type(value) is not int or value < 0:
        raise WireError(f"expected a non-negative integer, got {value!r}")
    return value


def _bool(value: object) -> bool:
    if type(value) is not bool:
        raise WireError(f"expected a boolean, got {value!r}")
    return value


def _bytes(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise WireError(f"expected bytes, got {type(value).__name__}")
    return value


def _node(value: object) -> str:
    if not isinstance(value, str):
        raise WireError(f"expected a node id, got {value!r}")
    try:
        return check_node_id(value)
    except ValueError as error:
        raise WireError(str(error)) from None


def _list(value: object, length: int | None = None) -> list[Any]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise WireError(f"expected a list of {length or 'any'} items, got {value!r:.80}")
    return value


def _decode_entry(value: object) -> Entry:
    term, index, kind, data = _list(value, 4)
    try:
        entry_kind = EntryKind(_int(kind))
    except ValueError:
        raise WireError(f"unknown entry kind {kind!r}") from None
    return Entry(_int(term), _int(index), entry_kind, _bytes(data))


def _decode_snapshot(value: object) -> Snapshot:
    index, term, voters, learners, data = _list(value, 5)
    conf = ConfState(
        frozenset(_node(v) for v in _list(voters)), frozenset(_node(n) for n in _list(learners))
    )
    return Snapshot(SnapshotMeta(_int(index), _int(term), conf), _bytes(data))


def decode_message(data: bytes) -> Message:
    """The Raft message in ``data``; :class:`WireError` if it is not a well-formed one."""
    try:
        fields = msgpack.unpackb(data, raw=False, use_list=True)
    except Exception as error:  # msgpack raises several unrelated types on garbage
        raise WireError(f"not msgpack: {error}") from None
    fields = _list(fields)
    if len(fields) < 4:
        raise WireError("a Raft message has at least 4 fields")
    code, sender, recipient, term, *rest = fields
    code = _int(code)
    if code >= len(_KINDS):
        raise WireError(f"unknown message type {code}")
    head = (_node(sender), _node(recipient), _int(term))
    kind = _KINDS[code]
    try:
        return _build(kind, head, rest)
    except (TypeError, ValueError) as error:
        if isinstance(error, WireError):
            raise
        raise WireError(f"malformed {kind.__name__}: {error}") from None


def _build(kind: type[Message], head: tuple[str, str, int], rest: list[Any]) -> Message:
    if kind is PreVote:
        last_index, last_term = rest
        return PreVote(*head, _int(last_index), _int(last_term))
    if kind is Vote:
        last_index, last_term, transfer = rest
        return Vote(*head, _int(last_index), _int(last_term), _bool(transfer))
    if kind is PreVoteResponse or kind is VoteResponse:
        (granted,) = rest
        return kind(*head, _bool(granted))
    if kind is Append:
        prev_index, prev_term, entries, commit = rest
        decoded = tuple(_decode_entry(e) for e in _list(entries))
        return Append(*head, _int(prev_index), _int(prev_term), decoded, _int(commit))
    if kind is AppendResponse:
        index, reject, hint, hint_term = rest
        return AppendResponse(*head, _int(index), _bool(reject), _int(hint), _int(hint_term))
    if kind is Heartbeat:
        commit, context = rest
        return Heartbeat(*head, _int(commit), _int(context))
    if kind is HeartbeatResponse:
        (context,) = rest
        return HeartbeatResponse(*head, _int(context))
    if kind is InstallSnapshot:
        (snapshot,) = rest
        return InstallSnapshot(*head, _decode_snapshot(snapshot))
    if rest:
        raise WireError("TimeoutNow carries no fields")
    return TimeoutNow(*head)
