"""Garbage sent to endpoints and subjects gets a clear error or is dropped, and is counted."""

from __future__ import annotations

import json

import msgpack
import pytest

from meshmind.bus import Bus, ServiceKit
from tests.conftest import Connect
from tests.kit.echo import ECHO, ECHO_SERVICE, PINGS, EchoReply, EchoRequest, Ping, setup_echo
from tests.kit.waiting import eventually, request_when_served

GARBAGE = [
    pytest.param(b"\xc1\xff\x00not msgpack", 400, "not valid msgpack", id="invalid-msgpack"),
    pytest.param(msgpack.packb([1, 2, 3]), 400, "must be a msgpack map", id="not-a-map"),
    pytest.param(
        msgpack.packb({"v": 1, "text": 42}),
        400,
        "text: Input should be a valid string",
        id="wrong-type",
    ),
    pytest.param(msgpack.packb({"v": 1}), 400, "text: Field required", id="missing-field"),
    pytest.param(
        msgpack.packb({"v": 1, "text": "x", "extra": 1}),
        400,
        "extra: Extra inputs are not permitted",
        id="unknown-field",
    ),
    pytest.param(
        msgpack.packb({"v": 7, "text": "x"}),
        426,
        "unsupported schema version 7",
        id="unknown-version",
    ),
    pytest.param(msgpack.packb({"text": "x"}), 400, "missing schema version", id="no-version"),
    pytest.param(
        msgpack.packb({"v": 1, "text": "x" * 20_000}), 413, "exceeds the limit", id="oversized"
    ),
]


async def served_echo(connect: Connect) -> tuple[Bus, Bus]:
    server, client = await connect("n1", name="echo"), await connect("n2")
    kit = ServiceKit(server, ECHO_SERVICE, "1.0.0")
    await setup_echo(server, kit)
    await kit.start()
    await request_when_served(client, ECHO, EchoRequest(text="warm-up"), node="n1")
    return server, client


async def echo_stats(client: Bus) -> dict[str, object]:
    [reply] = await client.gather_raw(f"$SRV.STATS.{ECHO_SERVICE}", wait=0.3)
    [endpoint] = json.loads(reply.data)["endpoints"]
    return endpoint  # type: ignore[no-any-return]


@pytest.mark.parametrize(("payload", "code", "reason"), GARBAGE)
async def test_garbage_gets_a_clear_error_and_the_service_keeps_serving(
    connect: Connect, payload: bytes, code: int, reason: str
) -> None:
    _, client = await served_echo(connect)

    reply = await client.request_raw("mesh.test.echo.n1", payload, timeout=5)

    error = reply.service_error
    assert error is not None, "an invalid request must be answered with service-error headers"
    assert error.code == code
    assert reason in error.description
    assert reply.headers["Nats-Service-Error-Code"] == str(code)
    after = await client.request(ECHO, EchoRequest(text="still here"), node="n1", timeout=5)
    assert after == EchoReply(text="still here", node="n1")
    stats = await echo_stats(client)
    assert stats["num_errors"] == 1
    assert stats["data"]["invalid_requests"] == 1  # type: ignore[index]


async def test_every_invalid_request_is_counted_in_srv_stats(connect: Connect) -> None:
    _, client = await served_echo(connect)
    for param in GARBAGE:
        payload = param.values[0]
        assert isinstance(payload, bytes)
        await client.request_raw("mesh.test.echo.n1", payload, timeout=5)

    stats = await echo_stats(client)

    assert stats["num_requests"] == len(GARBAGE) + 1
    assert stats["num_errors"] == len(GARBAGE)
    assert stats["data"]["invalid_requests"] == len(GARBAGE)  # type: ignore[index]


async def test_a_crashing_handler_answers_500_without_leaking_details(connect: Connect) -> None:
    _, client = await served_echo(connect)

    reply = await client.request_raw(
        "mesh.test.echo.n1", msgpack.packb({"v": 1, "text": "x", "crash": True}), timeout=5
    )

    assert reply.service_error is not None
    assert reply.service_error.code == 500
    assert "RuntimeError" in reply.service_error.description
    assert "asked to crash" not in reply.service_error.description
    assert (await echo_stats(client))["data"]["invalid_requests"] == 0  # type: ignore[index]


async def test_garbage_on_a_subject_is_dropped_and_counted(connect: Connect) -> None:
    listener, sender = await connect("n1"), await connect("n2")
    good: list[Ping] = []

    async def on_ping(ping: Ping) -> None:
        good.append(ping)

    subscription = await listener.subscribe(PINGS, on_ping)

    async def heard() -> bool:
        await sender.publish(PINGS, Ping(seq=0, origin="n2"), node="n2")
        return bool(good)

    await eventually(heard)
    for garbage in (
        b"\x00\xff",
        msgpack.packb({"v": 1, "seq": "nope", "origin": "n2"}),
        msgpack.packb({"v": 9, "seq": 1, "origin": "n2"}),
    ):
        await sender.publish_raw("mesh.test.ping.n2", garbage)
    await sender.publish(PINGS, Ping(seq=99, origin="n2"), node="n2")

    await eventually(lambda: good[-1].seq == 99)
    assert subscription.dropped == 3
    assert listener.dropped["mesh.test.ping.*"] == 3
    assert all(p.origin == "n2" for p in good)
