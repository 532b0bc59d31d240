"""The codec's limits: size, nesting, container and string lengths, versions, each with the
exact error a sender sees."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from meshmind.bus import Message, ServiceError, decode, encode
from meshmind.bus._codec import MAX_DEPTH, MAX_DETAIL_CHARS, MAX_ITEMS
from meshmind.bus.protocol import PeerQuery, ServiceBeat

LIMIT = 256 * 1024


class Loose(Message):
    """A model with a field that takes anything, so nesting reaches its validator."""

    anything: Any = None


def refusal(data: bytes, model: type[Message] = PeerQuery, max_size: int = LIMIT) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        decode(data, model, max_size=max_size)
    return info.value


def nested(depth: int) -> bytes:
    """A PeerQuery whose ``capability`` holds ``depth`` nested arrays (the map is level 1)."""
    return b"\x82\xa1v\x01\xaacapability" + b"\x91" * depth + b"\xc0"


@pytest.mark.parametrize("depth", [MAX_DEPTH, 1_000, 1_024, 1_025, 100_000])
def test_deep_nesting_is_refused_as_nested_too_deeply(depth: int) -> None:
    error = refusal(nested(depth))

    assert error.code == 400
    assert error.description == (
        f"PeerQuery: body is not valid msgpack: nested too deeply (more than {MAX_DEPTH} levels)"
    )


def test_nesting_within_the_limit_reaches_a_field_that_takes_anything() -> None:
    value: object = None
    for _ in range(MAX_DEPTH - 2):
        value = [value]
    assert decode(msgpack.packb({"v": 1, "anything": value}), Loose, max_size=LIMIT).anything == (
        value
    )


def test_nesting_one_level_too_deep_is_refused_even_where_a_field_takes_anything() -> None:
    value: object = None
    for _ in range(MAX_DEPTH):
        value = [value]

    error = refusal(msgpack.packb({"v": 1, "anything": value}), Loose)

    assert (error.code, error.description) == (
        400,
        f"Loose: body is not valid msgpack: nested too deeply (more than {MAX_DEPTH} levels)",
    )


def test_one_hundred_thousand_nested_arrays_in_a_map_are_refused_cleanly() -> None:
    data = b"\x81\xa8anything" + b"\x91" * 100_000 + b"\xc0"

    assert refusal(data, Loose).code == 400


@pytest.mark.parametrize(
    ("header", "description"),
    [
        (b"\xdd" + (MAX_ITEMS + 1).to_bytes(4, "big"), f"an array of {MAX_ITEMS + 1} elements"),
        (b"\xdd\xff\xff\xff\xff", "an array of 4294967295 elements"),
        (b"\xdf" + (MAX_ITEMS + 1).to_bytes(4, "big"), f"a map of {MAX_ITEMS + 1} entries"),
    ],
)
def test_containers_over_the_element_limit_are_refused_before_they_are_built(
    header: bytes, description: str
) -> None:
    error = refusal(b"\x82\xa1v\x01\xaacapability" + header)

    assert (error.code, error.description) == (
        413,
        f"PeerQuery: {description} exceeds the limit of {MAX_ITEMS}",
    )


def test_an_array_at_the_element_limit_reaches_validation() -> None:
    data = b"\x82\xa1v\x01\xaacapability\xdd" + MAX_ITEMS.to_bytes(4, "big") + b"\xc0" * MAX_ITEMS

    assert refusal(data).description == "PeerQuery: capability: Input should be a valid string"


@pytest.mark.parametrize("header", [b"\xdb\x00\x00\x04\x01", b"\xc6\x00\x00\x04\x01"])
def test_a_string_claiming_more_than_the_body_holds_is_truncated(header: bytes) -> None:
    error = refusal(b"\x82\xa1v\x01\xaacapability" + header + b"x" * 900, max_size=1024)

    assert (error.code, error.description) == (
        400,
        "PeerQuery: body is not valid msgpack: truncated",
    )


def test_a_body_one_byte_over_the_limit_is_refused_and_one_at_it_is_read() -> None:
    at_limit = msgpack.packb({"v": 1, "capability": "x" * 1000})

    assert decode(at_limit, PeerQuery, max_size=len(at_limit)).capability == "x" * 1000
    error = refusal(at_limit, max_size=len(at_limit) - 1)
    assert (error.code, error.description) == (
        413,
        f"payload of {len(at_limit)} bytes exceeds the limit of {len(at_limit) - 1} bytes",
    )


SPEAKS = "this process speaks v1"
NOT_INT = "PeerQuery: schema version 'v' must be an integer, got"
MISSING = "PeerQuery: missing schema version field 'v'"


@pytest.mark.parametrize(
    ("data", "code", "description"),
    [
        (msgpack.packb({"v": 2}), 426, f"PeerQuery: unsupported schema version 2, {SPEAKS}"),
        (msgpack.packb({"v": -1}), 426, f"PeerQuery: unsupported schema version -1, {SPEAKS}"),
        (msgpack.packb({"v": "1"}), 400, f"{NOT_INT} str"),
        (msgpack.packb({"v": True}), 400, f"{NOT_INT} bool"),
        (msgpack.packb({"v": 1.0}), 400, f"{NOT_INT} float"),
        (msgpack.packb({"v": None}), 400, MISSING),
        (msgpack.packb({}), 400, MISSING),
    ],
)
def test_schema_versions_are_checked(data: bytes, code: int, description: str) -> None:
    error = refusal(data)

    assert (error.code, error.description) == (code, description)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "truncated"),
        (b"\x82\xa1v\x01", "truncated"),
        (msgpack.packb({"v": 1}) + b"\xc0", "trailing bytes after the message"),
        (b"\x81\xa1v\xa2\xff\xfe", "a string is not valid UTF-8"),
        (msgpack.packb({"v": 1, 7: 1}), "map keys must be strings"),
        (
            msgpack.packb({"v": 1, "x": msgpack.ExtType(3, b"ab")}),
            "extension types are not accepted",
        ),
    ],
)
def test_malformed_msgpack_names_what_is_wrong(data: bytes, problem: str) -> None:
    error = refusal(data)

    assert (error.code, error.description) == (
        400,
        f"PeerQuery: body is not valid msgpack: {problem}",
    )


def test_error_descriptions_are_short_printable_ascii_whatever_the_input() -> None:
    key = "k\r\nNats-Service-Error-Code: 200\x00é" * 5_000

    error = refusal(msgpack.packb({"v": 1, key: 1}))

    assert error.code == 400
    assert len(error.description) <= MAX_DETAIL_CHARS
    assert error.description.isascii()
    assert error.description.isprintable()
    assert error.description.endswith("...: Extra inputs are not permitted")


def test_a_valid_message_still_round_trips() -> None:
    beat = ServiceBeat(node="n1", service="s", instance="i", queue_depth=3)

    assert decode(encode(beat), ServiceBeat, max_size=LIMIT) == beat
