"""msgpack codec: round trips, and every kind of bad input mapped to a clear error."""

from __future__ import annotations

import msgpack
import pytest

from meshmind.bus import BadRequest, PayloadTooLarge, UnsupportedVersion, decode, encode
from meshmind.bus.protocol import LabEvent, LinkSet, LinkShape, LinkStatus, NodeRef

LIMIT = 64 * 1024


def test_round_trip_keeps_every_field() -> None:
    event = LabEvent(
        node="n2",
        kind="link-set",
        at=1.5,
        link=LinkStatus(
            node="n2",
            shape=LinkShape(delay_ms=80, rate_bps=10**6),
            cut=False,
            connections=1,
            bytes_up=10,
            bytes_down=20,
        ),
    )
    assert decode(encode(event), LabEvent, max_size=LIMIT) == event


def test_every_payload_carries_its_schema_version() -> None:
    assert msgpack.unpackb(encode(NodeRef(node="n1")))["v"] == NodeRef.schema_version == 1


@pytest.mark.parametrize(
    ("data", "error", "text"),
    [
        (b"\xc1", BadRequest, "not valid msgpack"),
        (b"", BadRequest, "not valid msgpack"),
        (msgpack.packb("a string"), BadRequest, "must be a msgpack map"),
        (msgpack.packb({"v": 1, "node": "bad.node"}), BadRequest, "node: String should match"),
        (
            msgpack.packb({"v": 1, "node": "n1", "shape": {"delay_ms": -5}}),
            BadRequest,
            "shape.delay_ms: Input should be greater than or equal to 0",
        ),
        (
            msgpack.packb({"v": 2, "node": "n1", "shape": {}}),
            UnsupportedVersion,
            "unsupported schema version 2",
        ),
        (msgpack.packb({"node": "n1", "shape": {}}), BadRequest, "missing schema version"),
        (msgpack.packb({1: "int key"}), BadRequest, "not valid msgpack"),
    ],
)
def test_bad_input_raises_a_service_error_naming_the_problem(
    data: bytes, error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        decode(data, LinkSet, max_size=LIMIT)


def test_oversized_input_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(PayloadTooLarge, match="100 bytes exceeds the limit of 99 bytes") as info:
        decode(b"\x00" * 100, NodeRef, max_size=99)
    assert info.value.code == 413


def test_service_error_codes() -> None:
    assert BadRequest("x").code == 400
    assert UnsupportedVersion(2, 1, "M").code == 426
