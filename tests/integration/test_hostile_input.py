"""Hostile input against the real services of a lab: every endpoint and every subscribed event
subject of the contract gets hypothesis-generated garbage. Each request gets the clear error the
codec gives (never a timeout, never a 500), is counted in ``$SRV.STATS``, and the service goes on
answering; each event is dropped and counted, and the service stays up."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from meshmind.bus import Bus, BusSettings, EndpointSpec, EventSpec, Message, ServiceError, decode
from meshmind.bus.protocol import CONTRACT, DISCOVERY_SERVICE, HEALTH_SERVICE
from meshmind.lab import LocalMesh, host_services, node_names
from tests.kit.hostile import Hostile, hostile, pack, valid_message

T = TypeVar("T")

NODES = node_names(3)
TARGET = "n1"
OTHER = "n2"
EXAMPLES = settings(
    max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@dataclass
class Lab:
    """A running lab whose event loop lives in its own thread, so that hypothesis (which is
    synchronous) can drive requests one example at a time."""

    loop: asyncio.AbstractEventLoop
    mesh: LocalMesh | None = None
    bus: Bus | None = None
    other: Bus | None = None
    """A bus on the other host's leaf: a host may publish only its own events, so messages
    that name the other host come from there, as a compromised host's would."""
    instances: dict[str, str] = field(default_factory=dict)
    """Service name to instance id, for the services running on the target host."""

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def client(self) -> Bus:
        assert self.bus is not None
        return self.bus

    def sender(self, spec: EventSpec[Message], subject: str) -> Bus:
        """The bus of the host that may publish ``subject``."""
        assert self.other is not None
        return self.other if spec.host_token(subject) == OTHER else self.client

    async def ping(self) -> dict[str, str]:
        """The services answering ``$SRV.PING`` on the target host, with their instance ids."""
        replies = await self.client.gather_raw("$SRV.PING", wait=0.5)
        found = {}
        for reply in replies:
            if not reply.data:  # a status message (no responders yet), not an answer
                continue
            info = json.loads(reply.data)
            if (info.get("metadata") or {}).get("node") == TARGET:
                found[info["name"]] = info["id"]
        return found

    async def stats(self, service: str) -> dict[str, Any]:
        """The target host's instance of ``service``: its ``$SRV.STATS`` endpoints by name."""
        reply = await self.client.request_raw(
            f"$SRV.STATS.{service}.{self.instances[service]}", timeout=10
        )
        return {e["name"]: e for e in json.loads(reply.data)["endpoints"]}

    def subscriptions(self) -> dict[str, list[str]]:
        """Subject patterns each service on the target host subscribes to (the leaf's view)."""
        assert self.mesh is not None
        url = f"{self.mesh.host(TARGET).monitor_url}/connz?subs=1&limit=1024"
        with urllib.request.urlopen(url, timeout=10) as response:
            connz = json.load(response)
        subscribed: dict[str, list[str]] = {}
        for connection in connz.get("connections") or []:
            node, _, service = str(connection.get("name", "")).partition("/")
            if node == TARGET and service in self.instances:
                subscribed.setdefault(service, []).extend(connection.get("subscriptions_list", []))
        return subscribed


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Three hosts, the target running every host service; a client on its leaf."""
    run_dir: Path = tmp_path_factory.mktemp("hostile") / "lab"
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="hostile-lab", daemon=True)
    thread.start()
    lab = Lab(loop)

    async def start() -> None:
        lab.mesh = LocalMesh(run_dir, NODES, services=host_services(NODES, run_dir))
        await lab.mesh.start(timeout=60, services=False)
        await lab.mesh.start_services([TARGET])  # bad input needs no quorum: one host is enough
        lab.bus = await Bus.connect(
            BusSettings(node_id=TARGET, nats_url=lab.mesh.host(TARGET).url), name="hostile"
        )
        lab.other = await Bus.connect(
            BusSettings(node_id=OTHER, nats_url=lab.mesh.host(OTHER).url), name="hostile"
        )
        expected = len(lab.mesh.service_commands)
        for _ in range(480):  # every service that starts within two minutes is attacked
            lab.instances = await lab.ping()
            if len(lab.instances) >= expected:
                break
            await asyncio.sleep(0.25)
        missing = {DISCOVERY_SERVICE, HEALTH_SERVICE} - set(lab.instances)
        if missing:
            raise TimeoutError(f"{sorted(missing)} did not start on {TARGET}")

    async def stop() -> None:
        for bus in (lab.bus, lab.other):
            if bus is not None:
                await bus.close()
        if lab.mesh is not None:
            await lab.mesh.stop()

    try:
        lab.run(start(), timeout=180)
        yield lab
    finally:
        lab.run(stop(), timeout=120)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def refusal(data: bytes, model: type[Message], max_size: int) -> ServiceError | None:
    """What the codec says of ``data``: the error a service must answer with, or None."""
    try:
        decode(data, model, max_size=max_size)
    except ServiceError as error:
        return error
    return None


def default_request(service: str) -> EndpointSpec[Message, Message] | None:
    """An endpoint of ``service`` whose request needs no fields: a harmless valid request
    (its status endpoint first: a request with every default may start work elsewhere)."""
    for spec in sorted(CONTRACT.endpoints, key=lambda s: s.name != "status"):
        if spec.service == service and spec.parameters == ("node",):
            try:
                spec.request()
            except ValueError:
                continue
            return spec
    return None


@pytest.mark.parametrize("spec", CONTRACT.endpoints, ids=lambda s: s.subject)
def test_every_endpoint_answers_hostile_requests_with_a_clear_counted_error(
    lab: Lab, spec: EndpointSpec[Message, Message]
) -> None:
    if spec.service not in lab.instances:
        pytest.skip(f"{spec.service} is not among the host services running in the lab")
    subject = spec.render(node=TARGET)
    max_size = min(spec.max_request_bytes, lab.client.settings.max_payload)
    before = lab.run(lab.stats(spec.service))[spec.name]
    sent: list[str] = []

    @EXAMPLES
    @given(attack=hostile(spec.request, max_size))
    def attack_endpoint(attack: Hostile) -> None:
        expected = refusal(attack.data, spec.request, max_size)
        assume(expected is not None)  # a valid request is not an attack
        assert expected is not None
        if attack.code is not None:
            assert expected.code == attack.code, attack.kind

        reply = lab.run(lab.client.request_raw(subject, attack.data, timeout=10))

        sent.append(attack.kind)
        error = reply.service_error
        assert error is not None, f"{attack.kind}: answered as if valid"
        assert (error.code, error.description) == (expected.code, expected.description)

    attack_endpoint()

    after = lab.run(lab.stats(spec.service))[spec.name]
    assert sent
    assert after["data"]["invalid_requests"] - before["data"]["invalid_requests"] == len(sent)
    assert after["num_errors"] - before["num_errors"] >= len(sent)
    assert lab.run(lab.ping())[spec.service] == lab.instances[spec.service], "it restarted"
    harmless = default_request(spec.service)
    if harmless is not None:  # answered: a reply, or a refusal that is not an internal error
        data = pack(harmless.request().model_dump())
        reply = lab.run(lab.client.request_raw(harmless.render(node=TARGET), data, timeout=10))
        error = reply.service_error
        if error is None:
            assert decode(reply.data, harmless.reply, max_size=len(reply.data))
        else:
            assert error.code != 500, error.description


def concrete_subjects(lab: Lab, spec: EventSpec[Message]) -> dict[str, tuple[str, str]]:
    """Each service on the target host that subscribes to ``spec``: the pattern it subscribed
    with and a concrete subject it hears (placeholders it left open name another host)."""
    template = spec.wildcard.split(".")
    found = {}
    for service, patterns in lab.subscriptions().items():
        for pattern in patterns:
            tokens = pattern.split(".")
            if len(tokens) == len(template) and all(
                t == w or "*" in (t, w) for t, w in zip(tokens, template, strict=True)
            ):
                subject = ".".join(OTHER if t == "*" else t for t in tokens)
                found[service] = (pattern, subject)
    return found


def mismatched(spec: EventSpec[Message], subject: str) -> st.SearchStrategy[Hostile]:
    """Valid messages whose claimed host is not the one their subject names."""
    host = spec.host_token(subject)
    path = (spec.claim or "").split(".")

    def forge(message: Message, claimed: str) -> Hostile:
        body = message.model_dump()
        inner = body
        for name in path[:-1]:
            inner = inner[name]
        inner[path[-1]] = claimed
        return Hostile("mismatched identity", pack(body), None)

    others = st.sampled_from([n for n in [*NODES, "x_9"] if n != host])
    return st.builds(forge, valid_message(spec.model), others)


@pytest.mark.parametrize("spec", CONTRACT.events, ids=lambda s: s.subject)
def test_every_subscribed_subject_drops_and_counts_hostile_messages(
    lab: Lab, spec: EventSpec[Message]
) -> None:
    subscribers = concrete_subjects(lab, spec)
    if not subscribers:
        pytest.skip(f"no service running on {TARGET} in the lab subscribes to {spec.subject}")
    for service, (pattern, subject) in subscribers.items():
        attack_subscriber(lab, spec, service, pattern, subject)


def attack_subscriber(
    lab: Lab, spec: EventSpec[Message], service: str, pattern: str, subject: str
) -> None:
    """Publish hostile messages on ``subject``; ``service`` drops and counts every one."""
    max_size = lab.client.settings.max_payload
    if not lab.run(lab.stats(service)):
        pytest.skip(f"{service} serves no endpoint, so its $SRV.STATS carry no drop counts")
    before = dropped(lab, service, pattern)
    sent: list[str] = []
    attacks = hostile(spec.model, max_size)
    if spec.claim is not None:
        attacks = st.one_of(attacks, mismatched(spec, subject))

    @EXAMPLES
    @given(attack=attacks)
    def attack_subject(attack: Hostile) -> None:
        assume(len(attack.data) + 1024 <= max_size)  # the server refuses larger ones itself
        try:
            message = decode(attack.data, spec.model, max_size=max_size)
        except ServiceError:
            pass
        else:
            assume(not spec.believes(subject, message))  # a believable message is no attack
        lab.run(lab.sender(spec, subject).publish_raw(subject, attack.data))
        sent.append(attack.kind)

    attack_subject()

    for _ in range(240):  # the last messages may still be on their way
        if dropped(lab, service, pattern) - before >= len(sent):
            break
        time.sleep(0.25)
    assert sent
    assert dropped(lab, service, pattern) - before == len(sent)
    assert lab.run(lab.ping())[service] == lab.instances[service], f"{service} restarted"


def dropped(lab: Lab, service: str, pattern: str) -> int:
    """What ``service`` on the target host reports dropped on ``pattern`` in ``$SRV.STATS``."""
    endpoints = lab.run(lab.stats(service))
    counts = next(iter(endpoints.values()))["data"]["dropped_messages"]
    return int(counts.get(pattern, 0))
