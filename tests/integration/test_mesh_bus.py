"""Typed endpoints, events, KV and objects across the leaves of a real hub-and-leaf mesh."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from meshmind.bus import Bus, NoResponders, ServiceError, ServiceKit
from meshmind.bus.protocol import NodeRef
from tests.conftest import Connect
from tests.kit.echo import ECHO, ECHO_SERVICE, PINGS, EchoReply, EchoRequest, Ping, setup_echo
from tests.kit.waiting import eventually, request_when_served


async def start_echo(bus: Bus) -> None:
    kit = ServiceKit(bus, ECHO_SERVICE, "1.0.0")
    await setup_echo(bus, kit)
    await kit.start()


async def test_endpoint_on_n1_answers_a_request_made_on_n3(connect: Connect) -> None:
    n1, n3 = await connect("n1"), await connect("n3")
    await start_echo(n1)

    reply = await request_when_served(n3, ECHO, EchoRequest(text="hello"), node="n1")

    assert reply == EchoReply(text="hello", node="n1")


async def test_event_published_on_n2_reaches_subscribers_on_n1_and_n3(connect: Connect) -> None:
    n1, n2, n3 = await connect("n1"), await connect("n2"), await connect("n3")
    got: dict[str, list[Ping]] = {"n1": [], "n3": []}

    def collector(node: str) -> Callable[[Ping], Awaitable[None]]:
        async def on_ping(ping: Ping) -> None:
            got[node].append(ping)

        return on_ping

    await n1.subscribe(PINGS, collector("n1"), node="n2")
    await n3.subscribe(PINGS, collector("n3"))

    async def both_hear_probes() -> bool:  # interest takes a moment to cross the leaf links
        await n2.publish(PINGS, Ping(seq=-1, origin="probe"), node="n2")
        return all(got.values())

    await eventually(both_hear_probes)
    await asyncio.sleep(0.1)
    got["n1"].clear()
    got["n3"].clear()
    for seq in range(3):
        await n2.publish(PINGS, Ping(seq=seq, origin="n2"), node="n2")

    expected = [Ping(seq=s, origin="n2") for s in range(3)]
    await eventually(lambda: got == {"n1": expected, "n3": expected})


async def test_request_to_nobody_raises_no_responders(connect: Connect) -> None:
    n1 = await connect("n1")
    with pytest.raises(NoResponders, match=r"nobody serves mesh\.test\.echo\.n2"):
        await n1.request(ECHO, EchoRequest(text="x"), node="n2", timeout=2)


async def test_service_error_from_a_handler_reaches_the_caller(connect: Connect) -> None:
    n1, n2 = await connect("n1"), await connect("n2")
    await start_echo(n1)
    with pytest.raises(ServiceError) as caught:
        await request_when_served(n2, ECHO, EchoRequest(text="x", fail_with=409), node="n1")
    assert (caught.value.code, caught.value.description) == (409, "asked to fail with 409")


async def test_kv_written_on_n1_is_read_and_watched_on_n3(connect: Connect) -> None:
    n1, n3 = await connect("n1"), await connect("n3")
    kv1 = await n1.hub().key_value("test-peers", NodeRef)
    kv3 = await n3.hub().key_value("test-peers", NodeRef)
    changes = kv3.watch()

    await kv1.put("a", NodeRef(node="n1"))
    first = await asyncio.wait_for(anext(changes), 5)
    await kv1.delete("a")
    second = await asyncio.wait_for(anext(changes), 5)
    await changes.aclose()

    assert (first.key, first.value, first.operation) == ("a", NodeRef(node="n1"), "put")
    assert (second.key, second.value, second.operation) == ("a", None, "delete")
    assert await kv3.get("a") is None


async def test_object_larger_than_max_payload_crosses_leaves(connect: Connect) -> None:
    n1, n3 = await connect("n1"), await connect("n3")
    blob = bytes(range(256)) * 12_000  # 3 MB, three times NATS' max_payload
    info = await (await n1.hub().object_store("test-blobs")).put("adapter", blob)

    fetched = await (await n3.hub().object_store("test-blobs")).get("adapter")

    assert info.size == len(blob)
    assert fetched == blob
