"""batman-adv originator and neighbour tables, read over generic netlink (family "batadv")."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from pyroute2.netlink import (
    NLM_F_DUMP,
    NLM_F_REQUEST,
    genlmsg,
)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket

BATADV_FAMILY: Final = "batadv"
BATADV_FAMILY_VERSION: Final = 1

# Numbering from include/uapi/linux/batman_adv.h, Linux 6.17 (enum batadv_nl_commands and
# enum batadv_nl_attrs), checked against the open-mesh batman-adv tree. Both enums are
# append-only since Linux 4.8, so the ids below hold for every kernel that has them.
BATADV_CMD_GET_ORIGINATORS: Final = 8
BATADV_CMD_GET_NEIGHBORS: Final = 9

_Entry = TypeVar("_Entry")

UNAVAILABLE_MESSAGE: Final = (
    "generic netlink family 'batadv' not found: the batman-adv module is not loaded"
)


class BatmanUnavailable(Exception):
    """batman-adv cannot be read here: module not loaded, or no such mesh interface."""


class BatadvMessage(genlmsg):  # type: ignore[misc]
    """A batadv generic netlink message; the attribute id is the position in ``nla_map``."""

    prefix = "BATADV_ATTR_"
    nla_map = (
        ("BATADV_ATTR_UNSPEC", "none"),  # 0
        ("BATADV_ATTR_VERSION", "asciiz"),
        ("BATADV_ATTR_ALGO_NAME", "asciiz"),
        ("BATADV_ATTR_MESH_IFINDEX", "uint32"),
        ("BATADV_ATTR_MESH_IFNAME", "asciiz"),
        ("BATADV_ATTR_MESH_ADDRESS", "l2addr"),  # 5
        ("BATADV_ATTR_HARD_IFINDEX", "uint32"),
        ("BATADV_ATTR_HARD_IFNAME", "asciiz"),
        ("BATADV_ATTR_HARD_ADDRESS", "l2addr"),
        ("BATADV_ATTR_ORIG_ADDRESS", "l2addr"),
        ("BATADV_ATTR_TPMETER_RESULT", "uint8"),  # 10
        ("BATADV_ATTR_TPMETER_TEST_TIME", "uint32"),
        ("BATADV_ATTR_TPMETER_BYTES", "uint64"),
        ("BATADV_ATTR_TPMETER_COOKIE", "uint32"),
        ("BATADV_ATTR_PAD", "none"),
        ("BATADV_ATTR_ACTIVE", "flag"),  # 15
        ("BATADV_ATTR_TT_ADDRESS", "l2addr"),
        ("BATADV_ATTR_TT_TTVN", "uint8"),
        ("BATADV_ATTR_TT_LAST_TTVN", "uint8"),
        ("BATADV_ATTR_TT_CRC32", "uint32"),
        ("BATADV_ATTR_TT_VID", "uint16"),  # 20
        ("BATADV_ATTR_TT_FLAGS", "uint32"),
        ("BATADV_ATTR_FLAG_BEST", "flag"),
        ("BATADV_ATTR_LAST_SEEN_MSECS", "uint32"),
        ("BATADV_ATTR_NEIGH_ADDRESS", "l2addr"),
        ("BATADV_ATTR_TQ", "uint8"),  # 25
        ("BATADV_ATTR_THROUGHPUT", "uint32"),
        ("BATADV_ATTR_BANDWIDTH_UP", "uint32"),
        ("BATADV_ATTR_BANDWIDTH_DOWN", "uint32"),
        ("BATADV_ATTR_ROUTER", "l2addr"),
        ("BATADV_ATTR_BLA_OWN", "flag"),  # 30
        ("BATADV_ATTR_BLA_ADDRESS", "l2addr"),
        ("BATADV_ATTR_BLA_VID", "uint16"),
        ("BATADV_ATTR_BLA_BACKBONE", "l2addr"),
        ("BATADV_ATTR_BLA_CRC", "uint16"),
        ("BATADV_ATTR_DAT_CACHE_IP4ADDRESS", "ip4addr"),  # 35
        ("BATADV_ATTR_DAT_CACHE_HWADDRESS", "l2addr"),
        ("BATADV_ATTR_DAT_CACHE_VID", "uint16"),
        ("BATADV_ATTR_MCAST_FLAGS", "uint32"),
        ("BATADV_ATTR_MCAST_FLAGS_PRIV", "uint32"),
        ("BATADV_ATTR_VLANID", "uint16"),  # 40
        ("BATADV_ATTR_AGGREGATED_OGMS_ENABLED", "uint8"),
        ("BATADV_ATTR_AP_ISOLATION_ENABLED", "uint8"),
        ("BATADV_ATTR_ISOLATION_MARK", "uint32"),
        ("BATADV_ATTR_ISOLATION_MASK", "uint32"),
        ("BATADV_ATTR_BONDING_ENABLED", "uint8"),  # 45
        ("BATADV_ATTR_BRIDGE_LOOP_AVOIDANCE_ENABLED", "uint8"),
        ("BATADV_ATTR_DISTRIBUTED_ARP_TABLE_ENABLED", "uint8"),
        ("BATADV_ATTR_FRAGMENTATION_ENABLED", "uint8"),
        ("BATADV_ATTR_GW_BANDWIDTH_DOWN", "uint32"),
        ("BATADV_ATTR_GW_BANDWIDTH_UP", "uint32"),  # 50
        ("BATADV_ATTR_GW_MODE", "uint8"),
        ("BATADV_ATTR_GW_SEL_CLASS", "uint32"),
        ("BATADV_ATTR_HOP_PENALTY", "uint8"),
        ("BATADV_ATTR_LOG_LEVEL", "uint32"),
        ("BATADV_ATTR_MULTICAST_FORCEFLOOD_ENABLED", "uint8"),  # 55
        ("BATADV_ATTR_NETWORK_CODING_ENABLED", "uint8"),
        ("BATADV_ATTR_ORIG_INTERVAL", "uint32"),
        ("BATADV_ATTR_ELP_INTERVAL", "uint32"),
        ("BATADV_ATTR_THROUGHPUT_OVERRIDE", "uint32"),
        ("BATADV_ATTR_MULTICAST_FANOUT", "uint32"),  # 60
    )


@dataclass(frozen=True)
class BatmanOriginator:
    """One route to an originator through one next hop (a row of ``batctl originators``).

    ``tq`` (0..255) is set by B.A.T.M.A.N. IV, ``throughput_kbps`` by B.A.T.M.A.N. V; the
    other is None. ``best`` marks the next hop batman-adv currently routes through.
    """

    originator: str
    next_hop: str
    hard_iface: str
    hard_ifindex: int
    last_seen_ms: int
    tq: int | None
    throughput_kbps: int | None
    best: bool


@dataclass(frozen=True)
class BatmanNeighbour:
    """A single-hop neighbour heard on a hard interface (a row of ``batctl neighbors``).

    ``throughput_kbps`` is the B.A.T.M.A.N. V estimate; B.A.T.M.A.N. IV reports none.
    """

    neighbour: str
    hard_iface: str
    hard_ifindex: int
    last_seen_ms: int
    throughput_kbps: int | None


def _required(msg: Any, attr: str) -> Any:
    value = msg.get_attr(attr)
    if value is None:
        raise ValueError(f"batadv message (cmd {msg['cmd']}) lacks {attr}")
    return value


def _hard_iface(msg: Any, ifnames: Mapping[int, str] | None) -> tuple[str, int]:
    """The hard interface's name and index; kernels before 5.14 send only the index."""
    index = int(_required(msg, "BATADV_ATTR_HARD_IFINDEX"))
    name = msg.get_attr("BATADV_ATTR_HARD_IFNAME")
    if name is None:
        if ifnames is None or index not in ifnames:
            raise ValueError(f"batadv message names hard interface {index} by index only")
        name = ifnames[index]
    return str(name), index


def _optional_int(msg: Any, attr: str) -> int | None:
    value = msg.get_attr(attr)
    return None if value is None else int(value)


def parse_originator(msg: Any, ifnames: Mapping[int, str] | None = None) -> BatmanOriginator:
    """A decoded BATADV_CMD_GET_ORIGINATORS dump entry as a :class:`BatmanOriginator`.

    ``ifnames`` (ifindex to name) resolves the hard interface when the kernel sends only
    its index. Raises ValueError when a mandatory attribute is missing.
    """
    hard_iface, hard_ifindex = _hard_iface(msg, ifnames)
    return BatmanOriginator(
        originator=str(_required(msg, "BATADV_ATTR_ORIG_ADDRESS")),
        next_hop=str(_required(msg, "BATADV_ATTR_NEIGH_ADDRESS")),
        hard_iface=hard_iface,
        hard_ifindex=hard_ifindex,
        last_seen_ms=int(_required(msg, "BATADV_ATTR_LAST_SEEN_MSECS")),
        tq=_optional_int(msg, "BATADV_ATTR_TQ"),
        throughput_kbps=_optional_int(msg, "BATADV_ATTR_THROUGHPUT"),
        best=msg.get_attr("BATADV_ATTR_FLAG_BEST") is not None,
    )


def parse_neighbour(msg: Any, ifnames: Mapping[int, str] | None = None) -> BatmanNeighbour:
    """A decoded BATADV_CMD_GET_NEIGHBORS dump entry as a :class:`BatmanNeighbour`.

    ``ifnames`` as for :func:`parse_originator`.
    """
    hard_iface, hard_ifindex = _hard_iface(msg, ifnames)
    return BatmanNeighbour(
        neighbour=str(_required(msg, "BATADV_ATTR_NEIGH_ADDRESS")),
        hard_iface=hard_iface,
        hard_ifindex=hard_ifindex,
        last_seen_ms=int(_required(msg, "BATADV_ATTR_LAST_SEEN_MSECS")),
        throughput_kbps=_optional_int(msg, "BATADV_ATTR_THROUGHPUT"),
    )


def link_quality(originator: BatmanOriginator, reference_kbps: int = 100_000) -> float:
    """The originator route's quality in [0, 1].

    B.A.T.M.A.N. IV: ``tq / 255`` (TQ is already a 0..255 delivery-probability estimate).
    B.A.T.M.A.N. V: ``min(1, throughput_kbps / reference_kbps)``, linear up to the
    reference throughput and saturating at 1 above it; the default reference of
    100 Mbit/s rates any route at least that fast as perfect.
    """
    if reference_kbps <= 0:
        raise ValueError("reference_kbps must be positive")
    if originator.tq is not None:
        return min(1.0, max(0.0, originator.tq / 255))
    if originator.throughput_kbps is not None:
        return min(1.0, originator.throughput_kbps / reference_kbps)
    raise ValueError(f"originator {originator.originator} carries neither TQ nor throughput")


class BatmanAdv:
    """A generic netlink socket bound to the batadv family; open with :meth:`open`."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    @classmethod
    def open(cls) -> BatmanAdv:
        """Bind to the batadv family; BatmanUnavailable when the module is not loaded."""
        sock = GenericNetlinkSocket()
        # pyroute2 would also log its own error on the root logger; the exception says it.
        sock.asyncore.module_err_level = "debug"
        try:
            sock.bind(BATADV_FAMILY, BatadvMessage)
        except BaseException as exc:
            sock.close()
            if isinstance(exc, NetlinkError) and exc.code == errno.ENOENT:
                raise BatmanUnavailable(UNAVAILABLE_MESSAGE) from None
            raise
        return cls(sock)

    def originators(self, mesh_iface: str = "bat0") -> list[BatmanOriginator]:
        """Every originator route of ``mesh_iface``, all next hops included."""
        return self._dump(BATADV_CMD_GET_ORIGINATORS, mesh_iface, parse_originator)

    def neighbours(self, mesh_iface: str = "bat0") -> list[BatmanNeighbour]:
        """Every single-hop neighbour on the hard interfaces of ``mesh_iface``."""
        return self._dump(BATADV_CMD_GET_NEIGHBORS, mesh_iface, parse_neighbour)

    def _dump(
        self,
        cmd: int,
        mesh_iface: str,
        parse: Callable[[Any, Mapping[int, str] | None], _Entry],
    ) -> list[_Entry]:
        try:
            mesh_ifindex = socket.if_nametoindex(mesh_iface)
        except OSError:
            raise BatmanUnavailable(f"mesh interface {mesh_iface!r} does not exist") from None
        request = BatadvMessage()
        request["cmd"] = cmd
        request["version"] = BATADV_FAMILY_VERSION
        request["attrs"] = [("BATADV_ATTR_MESH_IFINDEX", mesh_ifindex)]
        try:
            replies = list(
                self._sock.nlm_request(
                    request, msg_type=self._sock.prid, msg_flags=NLM_F_REQUEST | NLM_F_DUMP
                )
            )
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                raise BatmanUnavailable(
                    f"{mesh_iface!r} is not a batman-adv mesh interface"
                ) from None
            raise
        ifnames: dict[int, str] | None = None
        if any(reply.get_attr("BATADV_ATTR_HARD_IFNAME") is None for reply in replies):
            ifnames = dict(socket.if_nameindex())
        return [parse(reply, ifnames) for reply in replies]

    def close(self) -> None:
        self._sock.close()
