"""A secure mesh against real nats-servers: each host's credentials allow only what the protocol
contract gives that host, leaves without credentials or TLS are refused, and the services still
work with exactly these permissions."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshmind.bus import (
    Bus,
    BusError,
    BusSettings,
    NoResponders,
    ProtocolError,
    RawMessage,
    ServiceKit,
    encode,
)
from meshmind.bus.protocol import (
    CONSENSUS_BUCKET,
    CONSENSUS_STREAM,
    DISCOVERY_PEERS,
    FL_OBJECTS,
    FL_STORE,
    HEALTH_PROBE,
    LINK_CHANGES,
    LINKS_BUCKET,
    PEERS_BUCKET,
    SERVICE_BEATS,
    DecisionProposal,
    HostLoad,
    KvCas,
    LinkChange,
    LinkReport,
    PeerInfo,
    PeerQuery,
    Probe,
    ProbeReply,
    ServiceBeat,
)
from meshmind.consensus import JetStreamBackend
from meshmind.lab import LocalMesh, ServerPorts, free_ports, host_services, leaf_config
from meshmind.lab._servers import LocalRunner, wait_healthy
from meshmind.security import new_ca
from tests.kit.recorder import Recorder
from tests.kit.waiting import eventually

NODES = ["n1", "n2"]
QUIET_S = 1.5
"""How long a message that was let through would take at most to arrive here (loopback)."""


@pytest.fixture
async def secure_mesh(tmp_path: Path) -> AsyncIterator[LocalMesh]:
    async with LocalMesh(tmp_path / "lab", NODES, secure=True) as mesh:
        yield mesh


async def _bus(url: str, node: str, name: str = "test") -> Bus:
    return await Bus.connect(BusSettings(node_id=node, nats_url=url), name=name)


@pytest.fixture
async def buses(secure_mesh: LocalMesh) -> AsyncIterator[dict[str, Bus]]:
    opened = {
        "hub": await _bus(secure_mesh.hub_url, "observer"),
        **{n: await _bus(secure_mesh.host(n).url, n) for n in NODES},
    }
    yield opened
    for bus in opened.values():
        await bus.close()


def _link(source: str, target: str) -> LinkChange:
    report = LinkReport(
        source=source,
        target=target,
        state="good",
        score=1.0,
        delivery=1.0,
        rtt_ms=1.0,
        jitter_ms=0.5,
        probes=1,
        at=time.time(),
    )
    return LinkChange(link=report, previous=None)


def _peer(node: str) -> PeerInfo:
    return PeerInfo(
        node=node,
        services=["forged"],
        capabilities=[],
        load=HostLoad(cpu_pct=0, mem_pct=0),
        version="0",
        started_at=time.time(),
    )


async def test_a_host_cannot_publish_another_hosts_link_reports_or_beats(
    buses: dict[str, Bus],
) -> None:
    hub, n1, n2 = buses["hub"], buses["n1"], buses["n2"]
    seen_at_hub = await Recorder.start(hub, LINK_CHANGES)
    seen_at_n1 = await Recorder.start(n1, LINK_CHANGES)
    beats_at_hub = await Recorder.start(hub, SERVICE_BEATS)
    await asyncio.sleep(QUIET_S)  # interest crosses the leaf links

    await n2.publish_raw(LINK_CHANGES.render(node="n1"), _encoded(_link("n1", "n2")))
    await n2.publish_raw(
        SERVICE_BEATS.render(node="n1"),
        _encoded(ServiceBeat(node="n1", service="forged", instance="x", queue_depth=0)),
    )
    await n2.publish(LINK_CHANGES, _link("n2", "n1"), node="n2")  # its own: allowed
    await n2.flush()

    await eventually(lambda: len(seen_at_hub.events) >= 1 and len(seen_at_n1.events) >= 1)
    await asyncio.sleep(QUIET_S)
    assert [m.link.source for _, m in seen_at_hub.events] == ["n2"]
    assert [m.link.source for _, m in seen_at_n1.events] == ["n2"]
    assert beats_at_hub.events == []
    assert dict(n2.denied) == {  # each refusal reached the publisher, and nothing else did
        LINK_CHANGES.render(node="n1"): 1,
        SERVICE_BEATS.render(node="n1"): 1,
    }


async def test_a_host_cannot_write_or_purge_another_hosts_keys(buses: dict[str, Bus]) -> None:
    hub, n2 = buses["hub"], buses["n2"]
    peers = await hub.hub().key_value(PEERS_BUCKET, PeerInfo, ttl_s=30)
    await peers.put("n1", _peer("n1"))
    as_n2 = await n2.hub().key_value(PEERS_BUCKET, PeerInfo, create=False)

    assert await as_n2.put("n2", _peer("n2")) > 0  # its own key: allowed
    with pytest.raises(BusError):
        await as_n2.put("n1", _peer("n2"))
    with pytest.raises(BusError):
        await as_n2.delete("n1")
    assert dict(n2.denied) == {"$JS.hub.API.$KV.mesh-peers.n1".lower(): 2}
    with pytest.raises(BusError):
        await n2.request_raw("$JS.hub.API.STREAM.PURGE.KV_mesh-peers", b"{}", timeout=1)
    links = await n2.hub().key_value(LINKS_BUCKET, LinkReport, ttl_s=30)
    assert await links.put("n2.n1", _link("n2", "n1").link) > 0
    with pytest.raises(BusError):
        await links.put("n1.n2", _link("n1", "n2").link)

    stored = await peers.get("n1")
    assert stored is not None
    assert stored.value is not None
    assert stored.value.services == ["forged"]
    assert sorted(await peers.keys()) == ["n1", "n2"]


async def test_a_host_receives_neither_another_hosts_requests_nor_its_beats(
    buses: dict[str, Bus],
) -> None:
    hub, n1, n2 = buses["hub"], buses["n1"], buses["n2"]
    stolen: list[str] = []

    async def steal(message: RawMessage) -> None:
        stolen.append(message.subject)

    await n2.subscribe_raw(SERVICE_BEATS.render(node="n1"), steal)
    await n2.subscribe_raw(HEALTH_PROBE.render(node="n1"), steal)  # n2 poses as n1's monitor
    await n2.subscribe_raw("_INBOX.n1.>", steal)  # n2 listens for the replies to n1
    await n2.flush()
    await asyncio.sleep(QUIET_S)

    beat = ServiceBeat(node="n1", service="s", instance="i", queue_depth=0)
    await hub.publish(SERVICE_BEATS, beat, node="n1")
    with pytest.raises(NoResponders):  # n2's subscription never reached the hub
        await hub.request(HEALTH_PROBE, Probe(origin="n3", seq=1), node="n1", timeout=1)
    await asyncio.sleep(QUIET_S)
    assert stolen == []
    assert n1.is_connected
    assert set(n2.denied) == {
        SERVICE_BEATS.render(node="n1"),
        HEALTH_PROBE.render(node="n1"),
        "_inbox.n1.>",
    }
    kit = ServiceKit(n2, HEALTH_PROBE.service, "0.0.1")

    async def answer(probe: Probe) -> ProbeReply:
        return ProbeReply(node="n2", seq=probe.seq)

    kit.endpoint(HEALTH_PROBE, answer, node="n2")
    await kit.start()
    try:  # n1's request and its reply cross the hub; n2 hears neither's reply to n1
        await asyncio.sleep(QUIET_S)
        reply = await n1.request(HEALTH_PROBE, Probe(origin="n1", seq=3), node="n2", timeout=5)
        assert reply.seq == 3
    finally:
        await kit.stop()
    await asyncio.sleep(QUIET_S)
    assert stolen == []


async def _rogue_leaf(mesh: LocalMesh, run_dir: Path, *, seed: Path | None, ca: Path | None) -> str:
    """Start a leaf that dials the hub directly with the given seed and CA (either may be
    missing); return its log once it has had time to try several times."""
    ports = ServerPorts(*free_ports(2))
    conf = run_dir / "leaf.conf"
    conf.parent.mkdir(parents=True)
    remote = "ignore_discovered_servers: true"
    if seed is not None:
        include = Path("..") / seed.relative_to(run_dir.parent)
        remote += f"\n      include {json.dumps(str(include))}"
    if ca is not None:
        remote += f"\n      tls: {{ ca_file: {json.dumps(str(ca))} }}"
    url = f"nats-leaf://127.0.0.1:{mesh.hub_leafnode_port}"
    text = leaf_config(run_dir.name, ports, url, run_dir / "js")
    conf.write_text(text.replace("ignore_discovered_servers: true", remote))
    server = LocalRunner().server(run_dir.name, conf, run_dir / "leaf.log")
    await server.start()
    try:
        await wait_healthy(f"http://127.0.0.1:{ports.monitor}")
        await asyncio.sleep(3)  # the leaf retries every second
        assert await mesh.joined() == set(NODES)
    finally:
        await server.stop()
    return (run_dir / "leaf.log").read_text()


async def test_the_hub_refuses_a_leaf_without_credentials(
    secure_mesh: LocalMesh, tmp_path: Path
) -> None:
    assert secure_mesh.credentials is not None
    log = await _rogue_leaf(
        secure_mesh, tmp_path / "rogue", seed=None, ca=secure_mesh.credentials.ca_cert
    )
    assert "Authorization Violation" in log


async def test_the_hub_refuses_a_leaf_without_tls(secure_mesh: LocalMesh) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", secure_mesh.hub_leafnode_port)
    try:
        info = json.loads((await reader.readline()).removeprefix(b"INFO "))
        assert info["tls_required"] is True
        writer.write(b'CONNECT {"name":"plain","verbose":false}\r\nPING\r\n')
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)  # until the hub hangs up
    finally:
        writer.close()
    assert b"PONG" not in answer
    assert secure_mesh.hub is not None
    assert await secure_mesh.joined() == set(NODES)


async def test_a_leaf_that_does_not_trust_the_mesh_ca_does_not_join(
    secure_mesh: LocalMesh, tmp_path: Path
) -> None:
    assert secure_mesh.credentials is not None
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(new_ca().cert_pem)
    seed = secure_mesh.credentials.host_seed("n2")
    log = await _rogue_leaf(secure_mesh, tmp_path / "rogue", seed=seed, ca=other_ca)
    assert "certificate signed by unknown authority" in log


async def test_the_services_work_with_exactly_these_permissions(tmp_path: Path) -> None:
    mesh = LocalMesh(
        tmp_path / "lab",
        ["n1", "n2", "n3"],
        services=host_services(),
        service_env={"PROBE_INTERVAL_S": "0.5"},
        secure=True,
    )
    async with mesh:
        hub = await _bus(mesh.hub_url, "observer")
        try:

            async def everyone_sees_everyone() -> bool:
                for node in mesh.nodes:
                    try:
                        view = await hub.request(DISCOVERY_PEERS, PeerQuery(), node=node, timeout=2)
                    except BusError:
                        return False
                    if [p.node for p in view.peers] != mesh.nodes or view.stale:
                        return False
                return True

            await eventually(everyone_sees_everyone, within=120, every=0.5)

            async def every_link_stored() -> bool:
                try:
                    kv = await hub.hub().key_value(LINKS_BUCKET, LinkReport, create=False)
                    keys = set(await kv.keys())
                except (BusError, KeyError):
                    return False
                return keys == {f"{a}.{b}" for a in mesh.nodes for b in mesh.nodes if a != b}

            await eventually(every_link_stored, within=60, every=0.5)
        finally:
            await hub.close()
        logs = "".join(p.read_text() for p in mesh.run_dir.glob("*/meshmind_*.log"))
        assert "Permissions Violation" not in logs


def _encoded(message: LinkChange | ServiceBeat) -> bytes:
    return encode(message)


async def test_a_payload_naming_another_host_than_its_subject_is_dropped_and_counted(
    buses: dict[str, Bus],
) -> None:
    hub, n1 = buses["hub"], buses["n1"]
    seen = await Recorder.start(hub, LINK_CHANGES)
    await asyncio.sleep(QUIET_S)

    # n1 may publish on its own subject, but not in another host's name.
    await n1.publish_raw(LINK_CHANGES.render(node="n1"), encode(_link("n2", "n1")))
    await n1.publish(LINK_CHANGES, _link("n1", "n2"), node="n1")

    await eventually(lambda: seen.events)
    await eventually(lambda: hub.dropped[LINK_CHANGES.wildcard] == 1)
    assert [m.link.source for _, m in seen.events] == ["n1"]


async def test_a_reply_from_another_host_than_the_request_names_is_refused(
    buses: dict[str, Bus],
) -> None:
    hub, n2 = buses["hub"], buses["n2"]
    kit = ServiceKit(n2, HEALTH_PROBE.service, "0.0.1")

    async def lie(probe: Probe) -> ProbeReply:
        return ProbeReply(node="n1", seq=probe.seq)

    kit.endpoint(HEALTH_PROBE, lie, node="n2")
    await kit.start()
    try:
        await asyncio.sleep(QUIET_S)
        with pytest.raises(ProtocolError, match="names another host"):
            await hub.request(HEALTH_PROBE, Probe(origin="n3", seq=7), node="n2", timeout=5)
    finally:
        await kit.stop()


async def test_a_host_uses_the_shared_stores_but_cannot_wipe_them(buses: dict[str, Bus]) -> None:
    n2 = buses["n2"]
    store = await n2.hub().object_store(FL_STORE)
    await store.put("updates/job/1/n2", b"adapter" * 1000)
    await store.put("updates/job/1/n2", b"replaced")  # a replacement purges the old chunks
    assert await store.get("updates/job/1/n2") == b"replaced"
    await store.delete("updates/job/1/n2")

    backend = JetStreamBackend(n2)
    written = await backend.cas(KvCas(key="role/leader", expected=None, value="n2"))
    assert written.ok
    ack = await backend.propose(DecisionProposal(record="heal n3", idempotency_key="a1"))
    assert ack.seq == 1
    assert (await backend.propose(DecisionProposal(record="x", idempotency_key="a1"))).duplicate

    for wipe in (
        f"$JS.hub.API.STREAM.PURGE.{CONSENSUS_BUCKET.stream}",
        f"$JS.hub.API.STREAM.PURGE.{CONSENSUS_STREAM.stream}",
        f"$JS.hub.API.STREAM.DELETE.{FL_OBJECTS.stream}",
        f"$JS.hub.API.STREAM.UPDATE.{CONSENSUS_BUCKET.stream}",
    ):
        with pytest.raises(BusError):
            await n2.request_raw(wipe, b"{}", timeout=1)
    assert (await backend.get("role/leader")).value == "n2"


def test_a_lab_is_secure_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESHMIND_LAB_SECURE", raising=False)
    assert LocalMesh(tmp_path / "a", NODES).secure
    monkeypatch.setenv("MESHMIND_LAB_SECURE", "0")
    assert not LocalMesh(tmp_path / "b", NODES).secure
    assert LocalMesh(tmp_path / "c", NODES, secure=True).secure
