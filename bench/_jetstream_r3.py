"""The JetStream R3 baseline: acked publishes to a 3-replica file stream, and its failover."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import nats.errors
import nats.js.errors
from nats.aio.client import Client

from bench._nats_cluster import add_r3_stream, connect, jetstream_cluster
from bench._report import percentile
from bench._writes import first_success_after_s, sequential_latencies_ms

STREAM = "BENCH"
SUBJECT = "bench.r3"
PAYLOAD = b"v" * 16
WARMUP = 50


@dataclass
class JetStreamFigures:
    """Per-repetition figures of the baseline."""

    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    failover_s: list[float] = field(default_factory=list)


class Publisher:
    """Acked publishes to the stream through one client."""

    def __init__(self, client: Client) -> None:
        self.js = client.jetstream()

    async def publish(self, n: int) -> bool:
        """Publish and wait for the stream's acknowledgement (errors propagate)."""
        ack = await self.js.publish(SUBJECT, PAYLOAD, timeout=5)
        return bool(ack.stream == STREAM)

    async def publish_within(self, n: int, timeout: float) -> bool:
        """Publish; false when no acknowledgement came within ``timeout`` seconds."""
        try:
            ack = await self.js.publish(SUBJECT, PAYLOAD, timeout=timeout)
        except (nats.errors.Error, nats.js.errors.Error):
            return False
        return bool(ack.stream == STREAM)


async def one_cluster(run_dir: Path, samples: int, figures: JetStreamFigures) -> None:
    """A fresh cluster: latency of ``samples`` publishes on the leader's server, then the
    stream leader's server killed and the time to the first acked publish from another."""
    async with jetstream_cluster(run_dir) as servers:
        by_name = {s.name: s for s in servers}
        admin = await connect(servers[0].url)
        leader = await add_r3_stream(admin, STREAM, SUBJECT)
        await admin.close()
        client = await connect(by_name[leader].url, reconnect=False)
        on_leader = Publisher(client)
        await sequential_latencies_ms(on_leader.publish, WARMUP)
        latencies = await sequential_latencies_ms(on_leader.publish, samples)
        figures.p50_ms.append(percentile(latencies, 50))
        figures.p99_ms.append(percentile(latencies, 99))
        await client.close()

        survivor = next(s for s in servers if s.name != leader)
        other = await connect(survivor.url)
        try:
            on_survivor = Publisher(other)
            await sequential_latencies_ms(on_survivor.publish, WARMUP)
            figures.failover_s.append(
                await first_success_after_s(
                    by_name[leader].process.kill, on_survivor.publish_within
                )
            )
        finally:
            with contextlib.suppress(nats.errors.Error):
                await other.close()


async def measure(run_dir: Path, samples: int, repeats: int) -> JetStreamFigures:
    """``repeats`` fresh clusters, each measuring latency and failover once."""
    figures = JetStreamFigures()
    for index in range(repeats):
        await one_cluster(run_dir / f"r3-{index + 1}", samples, figures)
    return figures
