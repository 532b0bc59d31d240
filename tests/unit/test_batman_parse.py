"""batadv generic netlink messages encoded as the kernel sends them, parsed back."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path
from typing import Any

import pytest

from meshmind.health import (
    BatadvMessage,
    BatmanAdv,
    BatmanOriginator,
    BatmanUnavailable,
    link_quality,
    parse_neighbour,
    parse_originator,
)
from meshmind.health._batman import (
    BATADV_CMD_GET_NEIGHBORS,
    BATADV_CMD_GET_ORIGINATORS,
    UNAVAILABLE_MESSAGE,
)

# From include/uapi/linux/batman_adv.h, written out here so that a shifted nla_map fails.
UAPI_ATTR_IDS = {
    "BATADV_ATTR_MESH_IFINDEX": 3,
    "BATADV_ATTR_HARD_IFINDEX": 6,
    "BATADV_ATTR_HARD_IFNAME": 7,
    "BATADV_ATTR_ORIG_ADDRESS": 9,
    "BATADV_ATTR_FLAG_BEST": 22,
    "BATADV_ATTR_LAST_SEEN_MSECS": 23,
    "BATADV_ATTR_NEIGH_ADDRESS": 24,
    "BATADV_ATTR_TQ": 25,
    "BATADV_ATTR_THROUGHPUT": 26,
    "BATADV_ATTR_MULTICAST_FANOUT": 60,
}
_NLMSG_HEADER = 16
_GENL_HEADER = 4


def kernel_message(cmd: int, attrs: list[tuple[str, Any]]) -> bytes:
    """The bytes of a dump entry, as batadv's genlmsg_put + nla_put_* would lay them out."""
    msg = BatadvMessage()
    msg["cmd"] = cmd
    msg["version"] = 1
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data)


def decoded(data: bytes) -> BatadvMessage:
    msg = BatadvMessage(data)
    msg.decode()
    return msg


def attribute_ids(data: bytes) -> list[int]:
    """The type of every top-level attribute in an encoded generic netlink message."""
    ids = []
    offset = _NLMSG_HEADER + _GENL_HEADER
    while offset < len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        ids.append(kind)
        offset += (length + 3) & ~3
    return ids


def iv_originator(best: bool) -> list[tuple[str, Any]]:
    attrs: list[tuple[str, Any]] = [
        ("BATADV_ATTR_ORIG_ADDRESS", "02:00:5e:00:00:0a"),
        ("BATADV_ATTR_NEIGH_ADDRESS", "02:00:5e:00:00:0b"),
        ("BATADV_ATTR_HARD_IFNAME", "mesh0"),
        ("BATADV_ATTR_HARD_IFINDEX", 4),
        ("BATADV_ATTR_TQ", 204),
        ("BATADV_ATTR_LAST_SEEN_MSECS", 340),
    ]
    if best:
        attrs.append(("BATADV_ATTR_FLAG_BEST", None))
    return attrs


def test_uapi_attribute_ids() -> None:
    names = [name for name, _ in BatadvMessage.nla_map]
    for name, uapi_id in UAPI_ATTR_IDS.items():
        assert names.index(name) == uapi_id, name
    assert (BATADV_CMD_GET_ORIGINATORS, BATADV_CMD_GET_NEIGHBORS) == (8, 9)


def test_encoded_attribute_ids_match_uapi() -> None:
    data = kernel_message(BATADV_CMD_GET_ORIGINATORS, iv_originator(best=True))
    expected = [UAPI_ATTR_IDS[name] for name, _ in iv_originator(best=True)]
    assert attribute_ids(data) == expected
    assert data[_NLMSG_HEADER] == BATADV_CMD_GET_ORIGINATORS


def test_batman_iv_originator() -> None:
    best = parse_originator(decoded(kernel_message(8, iv_originator(best=True))))
    other = parse_originator(decoded(kernel_message(8, iv_originator(best=False))))

    assert best == BatmanOriginator(
        originator="02:00:5e:00:00:0a",
        next_hop="02:00:5e:00:00:0b",
        hard_iface="mesh0",
        hard_ifindex=4,
        last_seen_ms=340,
        tq=204,
        throughput_kbps=None,
        best=True,
    )
    assert not other.best
    assert link_quality(best) == pytest.approx(204 / 255)


def test_batman_v_originator() -> None:
    data = kernel_message(
        BATADV_CMD_GET_ORIGINATORS,
        [
            ("BATADV_ATTR_ORIG_ADDRESS", "02:00:5e:00:00:0c"),
            ("BATADV_ATTR_NEIGH_ADDRESS", "02:00:5e:00:00:0d"),
            ("BATADV_ATTR_HARD_IFNAME", "mesh1"),
            ("BATADV_ATTR_HARD_IFINDEX", 5),
            ("BATADV_ATTR_THROUGHPUT", 54_000),
            ("BATADV_ATTR_LAST_SEEN_MSECS", 1_020),
            ("BATADV_ATTR_FLAG_BEST", None),
        ],
    )

    originator = parse_originator(decoded(data))

    assert originator.tq is None
    assert originator.throughput_kbps == 54_000
    assert (originator.hard_iface, originator.last_seen_ms, originator.best) == (
        "mesh1",
        1_020,
        True,
    )
    assert link_quality(originator) == pytest.approx(0.54)
    assert link_quality(originator, reference_kbps=10_000) == 1.0


def test_link_quality_bounds() -> None:
    silent = BatmanOriginator("a", "b", "mesh0", 4, 0, tq=0, throughput_kbps=None, best=False)
    perfect = BatmanOriginator("a", "b", "mesh0", 4, 0, tq=255, throughput_kbps=None, best=True)
    nothing = BatmanOriginator("a", "b", "mesh0", 4, 0, tq=None, throughput_kbps=0, best=True)

    assert (link_quality(silent), link_quality(perfect), link_quality(nothing)) == (0.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="reference_kbps"):
        link_quality(perfect, reference_kbps=0)


def test_batman_iv_neighbour_has_no_throughput() -> None:
    data = kernel_message(
        BATADV_CMD_GET_NEIGHBORS,
        [
            ("BATADV_ATTR_NEIGH_ADDRESS", "02:00:5e:00:00:0b"),
            ("BATADV_ATTR_HARD_IFNAME", "mesh0"),
            ("BATADV_ATTR_HARD_IFINDEX", 4),
            ("BATADV_ATTR_LAST_SEEN_MSECS", 80),
        ],
    )

    neighbour = parse_neighbour(decoded(data))

    assert (neighbour.neighbour, neighbour.hard_iface, neighbour.hard_ifindex) == (
        "02:00:5e:00:00:0b",
        "mesh0",
        4,
    )
    assert (neighbour.last_seen_ms, neighbour.throughput_kbps) == (80, None)


def test_batman_v_neighbour_from_an_older_kernel_names_the_interface_by_index() -> None:
    data = kernel_message(
        BATADV_CMD_GET_NEIGHBORS,
        [
            ("BATADV_ATTR_NEIGH_ADDRESS", "02:00:5e:00:00:0d"),
            ("BATADV_ATTR_HARD_IFINDEX", 5),
            ("BATADV_ATTR_LAST_SEEN_MSECS", 15),
            ("BATADV_ATTR_THROUGHPUT", 300_000),
        ],
    )

    neighbour = parse_neighbour(decoded(data), ifnames={5: "mesh1"})

    assert (neighbour.hard_iface, neighbour.throughput_kbps) == ("mesh1", 300_000)
    with pytest.raises(ValueError, match="by index only"):
        parse_neighbour(decoded(data))


def test_missing_mandatory_attribute_is_an_error() -> None:
    attrs = [a for a in iv_originator(best=True) if a[0] != "BATADV_ATTR_ORIG_ADDRESS"]
    with pytest.raises(ValueError, match="BATADV_ATTR_ORIG_ADDRESS"):
        parse_originator(decoded(kernel_message(BATADV_CMD_GET_ORIGINATORS, attrs)))


def test_open_reflects_whether_the_module_is_loaded() -> None:
    if not Path("/sys/module/batman_adv").exists():
        with pytest.raises(BatmanUnavailable) as raised:
            BatmanAdv.open()
        assert str(raised.value) == UNAVAILABLE_MESSAGE
    else:
        with contextlib.closing(BatmanAdv.open()):
            pass
