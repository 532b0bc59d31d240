"""health-monitor under real mesh faults: a slow hub link, forged reports, replies that answer
another probe, and a long outage of the host's own server."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshmind.bus import Bus, BusSettings, Empty, ServiceKit
from meshmind.bus.protocol import (
    HEALTH_LINKS,
    HEALTH_PROBE,
    HEALTH_SERVICE,
    LINK_CHANGES,
    LinkReport,
    LinkShape,
    Probe,
    ProbeReply,
)
from meshmind.health import link_key, read_links
from meshmind.lab import LocalMesh, node_names
from tests.kit.labs import observed_lab
from tests.kit.recorder import Recorder
from tests.kit.waiting import eventually, request_when_served

NODES = node_names(3)
PROBE_INTERVAL_S = 0.5
MONITOR = "meshmind_health_monitor"
PENDING_BYTES = 512


@pytest.fixture
async def observed(tmp_path: Path) -> AsyncIterator[tuple[LocalMesh, Bus]]:
    env = {
        "PROBE_INTERVAL_S": str(PROBE_INTERVAL_S),
        "LINK_REPORT_EVERY_S": "2",
        "NATS_PENDING_BYTES": str(PENDING_BYTES),
        "LOG_LEVEL": "info",
    }
    async with observed_lab(tmp_path / "lab", NODES, name="test", service_env=env) as pair:
        yield pair


async def stored_links(hub: Bus) -> dict[str, LinkReport]:
    """The believed reports in mesh-links, by key."""
    checked = await read_links(hub)
    return {link_key(r.source, r.target): r for r in checked.accepted}


def every_link() -> set[str]:
    return {link_key(s, t) for s in NODES for t in NODES if s != t}


async def all_stored_since(hub: Bus, since: float, keys: set[str]) -> bool:
    """Whether every key of ``keys`` holds a report measured after unix time ``since``."""
    stored = await stored_links(hub)
    return all(key in stored and stored[key].at > since for key in keys)


async def test_a_host_behind_a_slow_link_stores_every_link_it_measures(
    lab: LocalMesh, hub: Bus
) -> None:
    lab.host("n2").link.set_shape(LinkShape(delay_ms=250))
    await lab.start_services()

    await eventually(lambda: all_stored_since(hub, 0.0, every_link()), within=90, every=0.5)

    refreshed_after = time.time()
    n2_links = {link_key("n2", "n1"), link_key("n2", "n3")}
    await eventually(lambda: all_stored_since(hub, refreshed_after, n2_links), within=30)


async def meshctl_links(lab: LocalMesh) -> tuple[list[dict[str, object]], str]:
    """``meshctl links --json`` against the lab's hub: the rows and what went to stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meshmind.ctl",
        "links",
        "--json",
        "--url",
        lab.hub_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    rows: list[dict[str, object]] = json.loads(out)
    return rows, err.decode()


async def test_a_report_whose_claims_disagree_with_its_key_is_refused(
    lab: LocalMesh, hub: Bus
) -> None:
    await lab.start_services()
    await eventually(lambda: all_stored_since(hub, 0.0, every_link()), within=60, every=0.5)
    bucket = await hub.hub().key_value("mesh-links", LinkReport, create=False)
    forged = LinkReport(
        source="n1",
        target="n3",
        state="down",
        score=0.0,
        delivery=0.0,
        rtt_ms=None,
        jitter_ms=None,
        probes=1,
        at=4102444800.0,  # 2100-01-01
    )
    await bucket.put("n2.n9", forged)

    rows, stderr = await meshctl_links(lab)

    assert "refused 1 " in stderr, stderr
    assert "n2.n9" in stderr, stderr
    n1_n3 = [r for r in rows if (r["source"], r["target"]) == ("n1", "n3")]
    assert len(n1_n3) == 1
    assert n1_n3[0]["state"] == "good"
    assert float(str(n1_n3[0]["at"])) < time.time() + 5
    assert {f"{r['source']}.{r['target']}" for r in rows} == every_link()


async def test_replies_that_answer_another_probe_count_as_lost(lab: LocalMesh, hub: Bus) -> None:
    await lab.start_services()
    links = await Recorder.start(hub, LINK_CHANGES)
    await eventually(lambda: all_stored_since(hub, 0.0, every_link()), within=60, every=0.5)
    await lab.host("n2").services[MONITOR].kill()

    impostor = await Bus.connect(
        BusSettings(node_id="n2", nats_url=lab.host("n2").url), name="impostor"
    )
    kit = ServiceKit(impostor, HEALTH_SERVICE, "0.0.0")

    async def wrong_answer(probe: Probe) -> ProbeReply:
        if probe.origin == "n1":
            return ProbeReply(node="n2", seq=probe.seq + 1)  # an answer to another probe
        return ProbeReply(node="n3", seq=probe.seq)  # an answer from another host

    kit.endpoint(HEALTH_PROBE, wrong_answer, node="n2")
    served_at = time.monotonic()
    await kit.start()
    try:

        def both_see_n2_down() -> bool:
            latest = {
                (c.link.source, c.link.target): c.link.state for _, c in links.since(served_at)
            }
            return latest.get(("n1", "n2")) == "down" and latest.get(("n3", "n2")) == "down"

        await eventually(both_see_n2_down, within=20)
        answered = await request_when_served(
            hub, HEALTH_PROBE, Probe(origin="n1", seq=7), node="n2"
        )
        assert answered.seq == 8, "the impostor did answer every probe all along"
    finally:
        await kit.stop()
        await impostor.close()


async def test_monitor_measures_again_after_its_server_was_gone_long_enough_to_fill_buffers(
    lab: LocalMesh, hub: Bus
) -> None:
    await lab.start_services()
    links = await Recorder.start(hub, LINK_CHANGES)
    await eventually(lambda: all_stored_since(hub, 0.0, every_link()), within=60, every=0.5)
    host = lab.host("n2")
    monitor = host.services[MONITOR]

    await host.server.kill()
    # Probes every 0.5 s to two peers, the peer list, service beats: each send waits in the
    # 512-byte reconnect buffer until it is full, after which every send fails.
    await asyncio.sleep(10 * PROBE_INTERVAL_S)
    await host.server.start()
    await lab.wait_joined(["n2"], timeout=30)
    restored_at, restored_unix = time.monotonic(), time.time()

    def n2_reports_good_again() -> bool:
        latest = {
            c.link.target: c.link.state
            for _, c in links.since(restored_at)
            if c.link.source == "n2"
        }
        return latest == {"n1": "good", "n3": "good"}

    await eventually(n2_reports_good_again, within=30)
    n2_links = {link_key("n2", "n1"), link_key("n2", "n3")}
    await eventually(lambda: all_stored_since(hub, restored_unix, n2_links), within=30)
    assert monitor.running, f"the monitor exited with status {monitor.returncode}"
    local = await Bus.connect(BusSettings(node_id="n2", nats_url=host.url), name="t")
    try:
        view = await request_when_served(local, HEALTH_LINKS, Empty(), node="n2", within=30)
        assert {r.target: r.state for r in view.links} == {"n1": "good", "n3": "good"}
        stats = await local.gather_raw(f"$SRV.STATS.{HEALTH_SERVICE}", wait=0.5)
        documents = [json.loads(s.data) for s in stats]
        restarts = [
            d["endpoints"][0]["data"]["task_restarts"]
            for d in documents
            if d["metadata"]["node"] == "n2"
        ]
        assert len(restarts) == 1, "the monitor reports its task restarts in $SRV.STATS"
    finally:
        await local.close()
