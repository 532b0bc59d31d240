"""Raft messages survive the wire exactly, and garbage is refused as a wire error."""

from __future__ import annotations

import contextlib
import random

import msgpack
import pytest

from meshmind.consensus import WireError, decode_message, encode_message
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

SNAPSHOT = Snapshot(SnapshotMeta(7, 2, ConfState(frozenset({"a", "b"}), frozenset({"c"}))), b"s")
MESSAGES: list[Message] = [
    PreVote("a", "b", 3, 10, 2),
    PreVoteResponse("b", "a", 3, True),
    Vote("a", "b", 3, 10, 2, transfer=True),
    VoteResponse("b", "a", 3, False),
    Append("a", "b", 3, 9, 2, (Entry(3, 10, EntryKind.NORMAL, b"x"), Entry(3, 11)), 9),
    AppendResponse("b", "a", 3, 9, reject=True, reject_hint=5, hint_term=1),
    Heartbeat("a", "b", 3, 9, context=4),
    HeartbeatResponse("b", "a", 3, context=4),
    InstallSnapshot("a", "b", 3, SNAPSHOT),
    TimeoutNow("a", "b", 3),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_kind_round_trips(message: Message) -> None:
    assert decode_message(encode_message(message)) == message


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\xc1",
        msgpack.packb({"a": 1}),
        msgpack.packb([99, "a", "b", 1]),
        msgpack.packb([0, "a.b", "b", 1, 1, 1]),
        msgpack.packb([0, "a", "b", -1, 1, 1]),
        msgpack.packb([2, "a", "b", 1, 1, 1, "yes"]),
        msgpack.packb([4, "a", "b", 1, 0, 0, [[1, 1, 9, b""]], 0]),
        msgpack.packb([9, "a", "b", 1, "extra"]),
    ],
)
def test_malformed_messages_are_refused(garbage: bytes) -> None:
    with pytest.raises(WireError):
        decode_message(garbage)


def test_random_bytes_never_escape_as_anything_but_a_wire_error() -> None:
    rng = random.Random(7)
    encoded = [encode_message(m) for m in MESSAGES]
    for _ in range(3000):
        data = bytearray(rng.choice(encoded))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        with contextlib.suppress(WireError):
            decode_message(bytes(data))
