"""Bus benchmark: raw nats-py against the service kit (encode, validate, trace), same run."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

import nats
import nats.errors
from nats.aio.msg import Msg
from tests.kit.echo import ECHO, ECHO_SERVICE, PINGS, EchoRequest, Ping, setup_echo

from bench._report import Metric, Report, median, percentile
from meshmind.bus import Bus, BusSettings, NoResponders, ServiceKit, configure_logging, encode
from meshmind.lab import LocalMesh

MESSAGES = 20_000
REQUESTS = 2_000
REPEATS = 5
RAW_SUBJECT = "bench.raw"


TRACEPARENT = {"traceparent": "00-9867c5de08720cfd798bc04aec9547bf-25ede3b2ab4c36ca-01"}


class Countdown:
    """Counts arrivals; ``done`` is set at the ``expected``-th."""

    def __init__(self, expected: int) -> None:
        self.left = expected
        self.done = asyncio.Event()

    def tick(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set()


async def raw_throughput(url: str, headers: dict[str, str] | None = None) -> float:
    """Messages per second from one nats-py publisher to one subscriber."""
    sub_nc, pub_nc = await nats.connect(url), await nats.connect(url)
    payload = encode(Ping(seq=1, origin="n1"))
    arrived = Countdown(MESSAGES)

    async def on_message(_: Msg) -> None:
        arrived.tick()

    await sub_nc.subscribe(RAW_SUBJECT, cb=on_message, pending_msgs_limit=MESSAGES * 2)
    await sub_nc.flush()
    start = time.perf_counter()
    for _ in range(MESSAGES):
        await pub_nc.publish(RAW_SUBJECT, payload, headers=headers)
    await pub_nc.flush()
    await asyncio.wait_for(arrived.done.wait(), 120)
    elapsed = time.perf_counter() - start
    await sub_nc.close()
    await pub_nc.close()
    return MESSAGES / elapsed


async def kit_throughput(url: str) -> float:
    """Messages per second through typed publish and typed subscribe."""
    settings = BusSettings(node_id="n1", nats_url=url)
    sub_bus = await Bus.connect(settings, name="bench-sub")
    pub_bus = await Bus.connect(settings, name="bench-pub")
    arrived = Countdown(MESSAGES)

    async def on_ping(_: Ping) -> None:
        arrived.tick()

    await sub_bus.subscribe(PINGS, on_ping, node="n1")
    await sub_bus.flush()
    start = time.perf_counter()
    for seq in range(MESSAGES):
        await pub_bus.publish(PINGS, Ping(seq=seq, origin="n1"), node="n1")
    await pub_bus.flush()
    await asyncio.wait_for(arrived.done.wait(), 120)
    elapsed = time.perf_counter() - start
    assert sub_bus.dropped.total() == 0
    await sub_bus.close()
    await pub_bus.close()
    return MESSAGES / elapsed


async def raw_round_trips_us(url: str) -> list[float]:
    """Round trips of sequential nats-py requests to a nats-py responder."""
    server, client = await nats.connect(url), await nats.connect(url)
    reply = encode(Ping(seq=1, origin="n1"))

    async def respond(msg: Msg) -> None:
        await msg.respond(reply)

    await server.subscribe("bench.raw.req", cb=respond)
    await server.flush()
    request = encode(EchoRequest(text="ping"))
    for _ in range(50):  # warm up, and wait out a responder not yet visible to the client
        with contextlib.suppress(nats.errors.NoRespondersError):
            await client.request("bench.raw.req", request, timeout=5)
    samples = []
    for _ in range(REQUESTS):
        start = time.perf_counter()
        await client.request("bench.raw.req", request, timeout=5)
        samples.append((time.perf_counter() - start) * 1e6)
    await server.close()
    await client.close()
    return samples


async def kit_round_trips_us(url: str) -> list[float]:
    """Round trips of typed requests to a service-kit endpoint."""
    settings = BusSettings(node_id="n1", nats_url=url)
    server = await Bus.connect(settings, name="bench-server")
    client = await Bus.connect(settings, name="bench-client")
    kit = ServiceKit(server, ECHO_SERVICE, "1.0.0")
    await setup_echo(server, kit)
    await kit.start()
    for _ in range(50):  # warm up, as the raw side does
        with contextlib.suppress(NoResponders):
            await client.request(ECHO, EchoRequest(text="ping"), node="n1", timeout=5)
    samples = []
    for _ in range(REQUESTS):
        start = time.perf_counter()
        await client.request(ECHO, EchoRequest(text="ping"), node="n1", timeout=5)
        samples.append((time.perf_counter() - start) * 1e6)
    await kit.stop()
    await server.close()
    await client.close()
    return samples


async def run() -> Report:
    """Both sides, interleaved, ``REPEATS`` times, on one leaf server of a local mesh."""
    configure_logging(BusSettings(log_level="warning"), "bench")
    raw_tp: list[float] = []
    header_tp: list[float] = []
    kit_tp: list[float] = []
    raw_p50: list[float] = []
    kit_p50: list[float] = []
    raw_p99: list[float] = []
    kit_p99: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        # Without permissions: the raw baseline's client uses subjects and inboxes that are
        # not in the contract; both sides then pay the same, and the ratio is the kit's alone.
        async with LocalMesh(Path(tmp), ["n1"], secure=False) as mesh:
            url = mesh.host("n1").url
            for _ in range(REPEATS):
                raw_tp.append(await raw_throughput(url))
                header_tp.append(await raw_throughput(url, TRACEPARENT))
                kit_tp.append(await kit_throughput(url))
                raw = await raw_round_trips_us(url)
                kit = await kit_round_trips_us(url)
                raw_p50.append(percentile(raw, 50))
                kit_p50.append(percentile(kit, 50))
                raw_p99.append(percentile(raw, 99))
                kit_p99.append(percentile(kit, 99))
    return Report(
        "bus",
        [
            Metric(
                "kit_pubsub_throughput",
                median(kit_tp),
                "msg/s",
                "ratio >= 0.5",
                "raw_pubsub_throughput",
                median(raw_tp),
            ),
            Metric(
                "raw_traceparent_pubsub_throughput",
                median(header_tp),
                "msg/s",
                None,
                "raw_pubsub_throughput",
                median(raw_tp),
                note="raw nats-py carrying only a W3C traceparent header, as every kit message "
                "must: the header alone costs nats-py about half its throughput, a ceiling on "
                "the kit's ratio before any decoding, validation or span",
            ),
            Metric(
                "kit_request_p50_us",
                median(kit_p50),
                "us",
                "ratio <= 1.3",
                "raw_request_p50_us",
                median(raw_p50),
            ),
            Metric(
                "kit_request_p99_us",
                median(kit_p99),
                "us",
                None,
                "raw_request_p99_us",
                median(raw_p99),
            ),
        ],
        notes=[
            f"{MESSAGES} messages and {REQUESTS} sequential requests per repetition, "
            f"median of {REPEATS} interleaved repetitions, one process, one leaf server; "
            "the kit side encodes and validates pydantic models and opens a span per "
            "publish, request and handled message (no exporter)."
        ],
    )
