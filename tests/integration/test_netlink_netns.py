"""Interface state and counters read over rtnetlink from two namespaces joined by a veth pair."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from meshmind.health import InterfaceSample, NetlinkInterfaces, rates


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2's ip command"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"ip netns is unavailable: {probe.stderr.strip()}"
    return None


_UNAVAILABLE = _netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or ""),
]

ADDRESS_A = "192.0.2.1"
ADDRESS_B = "192.0.2.2"
VETH_A = "veth-a"
VETH_B = "veth-b"
DATAGRAMS = 200
PAYLOAD = 100
# IPv4 and UDP headers; the veth counts the Ethernet header on top.
HEADERS = 20 + 8


@dataclass(frozen=True)
class VethPair:
    """Namespace ``ns_a`` holds ``veth-a`` (192.0.2.1), ``ns_b`` its peer ``veth-b`` (.2)."""

    ns_a: str
    ns_b: str


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def veth_pair() -> Iterator[VethPair]:
    tag = secrets.token_hex(3)
    pair = VethPair(ns_a=f"mm-{tag}-a", ns_b=f"mm-{tag}-b")
    try:
        ip("netns", "add", pair.ns_a)
        ip("netns", "add", pair.ns_b)
        # Both ends are born in their namespaces: no name is ever taken in this one.
        peer = ("peer", "name", VETH_B, "netns", pair.ns_b)
        ip("link", "add", VETH_A, "netns", pair.ns_a, "type", "veth", *peer)
        for ns, veth, address in ((pair.ns_a, VETH_A, ADDRESS_A), (pair.ns_b, VETH_B, ADDRESS_B)):
            ip("-n", ns, "address", "add", f"{address}/24", "dev", veth)
            ip("-n", ns, "link", "set", veth, "up")
        yield pair
    finally:
        for ns in (pair.ns_a, pair.ns_b):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)


def sample_of(ns: str, name: str) -> InterfaceSample:
    with contextlib.closing(NetlinkInterfaces(netns=ns)) as interfaces:
        (found,) = interfaces.sample([name])
    return found


def wait_for(
    read: Callable[[], InterfaceSample], check: Callable[[InterfaceSample], bool]
) -> InterfaceSample:
    """The first sample that passes ``check``; the kernel applies carrier changes lazily."""
    deadline = time.monotonic() + 5.0
    while True:
        sample = read()
        if check(sample) or time.monotonic() > deadline:
            return sample
        time.sleep(0.05)


def send_udp(ns: str, destination: str, count: int) -> None:
    script = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for _ in range(int(sys.argv[2])):\n"
        f"    s.sendto(b'x' * {PAYLOAD}, (sys.argv[1], 9))\n"
    )
    subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", script, destination, str(count)],
        check=True,
    )


def test_counters_follow_the_traffic(veth_pair: VethPair) -> None:
    send_udp(veth_pair.ns_a, ADDRESS_B, 1)
    # The first datagram resolves B's address; then nothing waits in the ARP queue.
    time.sleep(0.2)
    a_before = sample_of(veth_pair.ns_a, VETH_A)
    b_before = sample_of(veth_pair.ns_b, VETH_B)

    send_udp(veth_pair.ns_a, ADDRESS_B, DATAGRAMS)
    a_after = sample_of(veth_pair.ns_a, VETH_A)
    b_after = sample_of(veth_pair.ns_b, VETH_B)

    assert a_after.tx_packets - a_before.tx_packets >= DATAGRAMS
    assert a_after.tx_bytes - a_before.tx_bytes >= DATAGRAMS * (PAYLOAD + HEADERS)
    assert b_after.rx_packets - b_before.rx_packets >= DATAGRAMS
    assert b_after.rx_bytes - b_before.rx_bytes >= DATAGRAMS * (PAYLOAD + HEADERS)
    sent = rates(a_before, a_after)
    assert sent.tx_packets_per_s > 0
    assert (sent.tx_error_ratio, sent.tx_drop_ratio, sent.reset) == (0.0, 0.0, False)


def test_link_down_and_up_seen_from_both_ends(veth_pair: VethPair) -> None:
    def read_a() -> InterfaceSample:
        return sample_of(veth_pair.ns_a, VETH_A)

    def read_b() -> InterfaceSample:
        return sample_of(veth_pair.ns_b, VETH_B)

    a = wait_for(read_a, lambda s: s.oper_state == "UP")
    b = wait_for(read_b, lambda s: s.oper_state == "UP")
    assert (a.up, a.oper_state, b.up, b.oper_state) == (True, "UP", True, "UP")

    ip("-n", veth_pair.ns_a, "link", "set", VETH_A, "down")
    b_at_once = read_b()
    a = wait_for(read_a, lambda s: s.oper_state == "DOWN")
    b = wait_for(read_b, lambda s: s.oper_state != "UP")
    assert (a.up, a.admin_up, a.oper_state) == (False, False, "DOWN")
    assert (b_at_once.up, b_at_once.carrier) == (False, False)
    assert (b.up, b.admin_up, b.carrier) == (False, True, False)
    assert b.oper_state in ("LOWERLAYERDOWN", "DOWN")

    ip("-n", veth_pair.ns_a, "link", "set", VETH_A, "up")
    a = wait_for(read_a, lambda s: s.oper_state == "UP")
    b = wait_for(read_b, lambda s: s.oper_state == "UP")
    assert (a.up, a.admin_up, a.carrier, a.oper_state) == (True, True, True, "UP")
    assert (b.up, b.carrier, b.oper_state) == (True, True, "UP")


def test_a_missing_namespace_is_an_error_not_created() -> None:
    missing = f"mm-{secrets.token_hex(3)}-missing"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        NetlinkInterfaces(netns=missing)
    assert not os.path.exists(os.path.join("/run/netns", missing))
