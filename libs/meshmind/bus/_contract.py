"""Declarations of subjects and endpoints: what a protocol module is made of."""

from __future__ import annotations

import enum
import functools
import re
import string
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from meshmind.bus._message import Message
from meshmind.bus._settings import check_node_id

M = TypeVar("M", bound=Message)
Q = TypeVar("Q", bound=Message)
R = TypeVar("R", bound=Message)

_FORMATTER = string.Formatter()
_SUBJECT_TEMPLATE = re.compile(r"^mesh(\.([a-z0-9_-]+|\{[a-z_]+\}))+$")
_KEY_TEMPLATE = re.compile(r"^\{node\}(\.(\*|>|[A-Za-z0-9_-]+))*$")


class Party(enum.StrEnum):
    """Who may publish on a subject, read it, send its requests or serve it."""

    NAMED_HOST = "the host named in the subject"
    ANY_HOST = "any host"
    OPERATOR = "the operator (tools on the hub side), no host"


def claimed_value(message: Message, path: str) -> object:
    """The value at a dotted field ``path`` of ``message`` (``link.source``)."""
    value: object = message
    for name in path.split("."):
        value = getattr(value, name, None)
    return value


def _check_claim(model: type[Message], path: str) -> None:
    current: Any = model
    for name in path.split("."):
        fields = getattr(current, "model_fields", {})
        if name not in fields:
            raise ValueError(f"{model.__name__} has no field {path!r} to name the host")
        current = fields[name].annotation


def _parameters(template: str) -> tuple[str, ...]:
    return tuple(name for _, name, _, _ in _FORMATTER.parse(template) if name)


def _render(template: str, params: dict[str, str]) -> str:
    return _render_checked(template, tuple(sorted(params.items())))


@functools.lru_cache(maxsize=4096)
def _render_checked(template: str, params: tuple[tuple[str, str], ...]) -> str:
    expected = set(_parameters(template))
    given = dict(params)
    if set(given) != expected:
        raise ValueError(f"{template} takes parameters {sorted(expected)}, got {sorted(given)}")
    for value in given.values():
        check_node_id(value)
    return template.format(**given)


def _wildcard(template: str) -> str:
    return template.format(**dict.fromkeys(_parameters(template), "*"))


@dataclass(frozen=True)
class _Addressed:
    """A subject template such as ``mesh.peer.{node}.joined``."""

    subject: str

    def __post_init__(self) -> None:
        if not _SUBJECT_TEMPLATE.fullmatch(self.subject):
            raise ValueError(f"bad subject template {self.subject!r}")

    @property
    def parameters(self) -> tuple[str, ...]:
        """The names of the template's placeholders."""
        return _parameters(self.subject)

    def render(self, **params: str) -> str:
        """The concrete subject for ``params``; every placeholder must be given a node id."""
        return _render(self.subject, params)

    @property
    def wildcard(self) -> str:
        """The subject with every placeholder replaced by ``*``."""
        return _wildcard(self.subject)

    def host_token(self, subject: str) -> str | None:
        """The host a concrete ``subject`` of this template names (its first placeholder)."""
        names = self.parameters
        if not names:
            return None
        index = self.subject.split(".").index("{" + names[0] + "}")
        tokens = subject.split(".")
        return tokens[index] if index < len(tokens) else None

    def pattern(self, **params: str) -> str:
        """The subject with the given placeholders filled in and the others ``*``."""
        unknown = set(params) - set(self.parameters)
        if unknown:
            raise ValueError(f"{self.subject} has no parameters {sorted(unknown)}")
        for value in params.values():
            check_node_id(value)
        return self.subject.format(**{name: params.get(name, "*") for name in self.parameters})


@dataclass(frozen=True)
class EventSpec(_Addressed, Generic[M]):
    """An event subject, its payload model, and who may publish and read it.

    ``claim`` is the payload field (dotted for nested ones) that names the same host as the
    subject; a payload whose claim differs from its subject is not believed.
    """

    model: type[M]
    summary: str
    publisher: Party = Party.ANY_HOST
    readers: Party = Party.ANY_HOST
    claim: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        named = Party.NAMED_HOST in (self.publisher, self.readers) or self.claim is not None
        if named and not self.parameters:
            raise ValueError(f"{self.subject}: naming a host needs a placeholder (the first)")
        if self.claim is not None:
            _check_claim(self.model, self.claim)

    def believes(self, subject: str, message: Message) -> bool:
        """Whether ``message``'s claimed host is the one its ``subject`` names."""
        if self.claim is None:
            return True
        return claimed_value(message, self.claim) == self.host_token(subject)


@dataclass(frozen=True)
class EndpointSpec(_Addressed, Generic[Q, R]):
    """A request/reply endpoint of ``service``, served through the NATS Services API."""

    service: str
    name: str
    request: type[Q]
    reply: type[R]
    summary: str
    max_request_bytes: int = 256 * 1024
    requesters: Party = Party.ANY_HOST
    server: Party = Party.NAMED_HOST
    reply_claim: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        named = self.server is Party.NAMED_HOST or self.reply_claim is not None
        if named and len(self.parameters) != 1:
            raise ValueError(f"{self.subject}: naming a host needs exactly one placeholder")
        if self.reply_claim is not None:
            _check_claim(self.reply, self.reply_claim)

    def believes(self, subject: str, reply: Message) -> bool:
        """Whether ``reply`` comes from the host its request ``subject`` names."""
        if self.reply_claim is None:
            return True
        return claimed_value(reply, self.reply_claim) == self.host_token(subject)


@dataclass(frozen=True)
class BucketKeys:
    """A hub KV bucket and the keys a host may write in it (``{node}`` is the host)."""

    bucket: str
    writable: tuple[str, ...]
    summary: str

    def __post_init__(self) -> None:
        for key in self.writable:
            if not _KEY_TEMPLATE.fullmatch(key):
                raise ValueError(f"bad key template {key!r}: it must start with {{node}}")

    def keys_of(self, node: str) -> list[str]:
        """The key patterns host ``node`` may write."""
        check_node_id(node)
        return [key.replace("{node}", node) for key in self.writable]


class StoreKind(enum.StrEnum):
    """What a shared hub store is, which decides the JetStream subjects writing it takes."""

    KV = "key-value bucket"
    OBJECTS = "object store"
    STREAM = "stream"


@dataclass(frozen=True)
class SharedStore:
    """A hub store that every host may write anywhere in: what it holds is guarded by the
    writers' own checks (revisions, expected sequences, digests), not by per-host keys."""

    name: str
    kind: StoreKind
    summary: str
    subject_prefix: str = ""
    """A stream's subjects: ``<subject_prefix>.>``."""

    def __post_init__(self) -> None:
        if (self.kind is StoreKind.STREAM) != bool(self.subject_prefix):
            raise ValueError(f"{self.name!r}: streams, and only streams, have a subject prefix")

    @property
    def stream(self) -> str:
        """The JetStream stream behind the store."""
        if self.kind is StoreKind.KV:
            return f"KV_{self.name}"
        if self.kind is StoreKind.OBJECTS:
            return f"OBJ_{self.name}"
        return self.name

    def written_on(self, api: str) -> list[str]:
        """The subjects a write to the store is published on (``api``: the hub's JetStream
        API prefix, which KV writes cross through)."""
        if self.kind is StoreKind.KV:
            return [f"{api}.$KV.{self.name}.>"]
        if self.kind is StoreKind.OBJECTS:
            return [f"$O.{self.name}.>"]
        return [f"{self.subject_prefix}.>"]


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether a concrete ``subject`` matches a NATS ``pattern`` with ``*`` and ``>``."""
    want = pattern.split(".")
    got = subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(got) > index
        if index >= len(got) or (token != "*" and token != got[index]):
            return False
    return len(want) == len(got)


@dataclass
class Contract:
    """The registry of every event and endpoint a protocol module declares."""

    events: list[EventSpec[Message]] = field(default_factory=list)
    endpoints: list[EndpointSpec[Message, Message]] = field(default_factory=list)
    buckets: list[BucketKeys] = field(default_factory=list)
    shared: list[SharedStore] = field(default_factory=list)

    def event(
        self,
        subject: str,
        model: type[M],
        summary: str,
        *,
        publisher: Party = Party.ANY_HOST,
        readers: Party = Party.ANY_HOST,
        claim: str | None = None,
    ) -> EventSpec[M]:
        """Declare an event subject, its payload model, who publishes and who reads it."""
        spec = EventSpec(subject, model, summary, publisher, readers, claim)
        self._check_unique(spec.subject)
        self.events.append(spec)  # type: ignore[arg-type]
        return spec

    def endpoint(
        self,
        service: str,
        name: str,
        subject: str,
        request: type[Q],
        reply: type[R],
        summary: str,
        *,
        max_request_bytes: int = 256 * 1024,
        requesters: Party = Party.ANY_HOST,
        server: Party | None = None,
        reply_claim: str | None = None,
    ) -> EndpointSpec[Q, R]:
        """Declare an endpoint of ``service``, its request and reply models, who may send it
        requests and who serves it (by default the host its one placeholder names, or any
        host when it has none)."""
        if server is None:
            server = Party.NAMED_HOST if _parameters(subject) else Party.ANY_HOST
        spec = EndpointSpec(
            subject,
            service,
            name,
            request,
            reply,
            summary,
            max_request_bytes,
            requesters,
            server,
            reply_claim,
        )
        self._check_unique(spec.subject)
        self.endpoints.append(spec)  # type: ignore[arg-type]
        return spec

    def bucket(self, bucket: str, writable: tuple[str, ...], summary: str) -> BucketKeys:
        """Declare a hub KV bucket and the keys each host may write there."""
        if any(b.bucket == bucket for b in self.buckets):
            raise ValueError(f"bucket {bucket!r} is declared twice")
        spec = BucketKeys(bucket, writable, summary)
        self.buckets.append(spec)
        return spec

    def shared_store(
        self, name: str, kind: StoreKind, summary: str, *, subject_prefix: str = ""
    ) -> SharedStore:
        """Declare a hub store every host may write anywhere in."""
        if any(s.name == name and s.kind is kind for s in self.shared):
            raise ValueError(f"{kind} {name!r} is declared twice")
        spec = SharedStore(name, kind, summary, subject_prefix)
        self.shared.append(spec)
        return spec

    def model_for(self, subject: str) -> type[Message] | None:
        """The payload model of the event or endpoint request a concrete subject carries."""
        for event in self.events:
            if subject_matches(event.wildcard, subject):
                return event.model
        for endpoint in self.endpoints:
            if subject_matches(endpoint.wildcard, subject):
                return endpoint.request
        return None

    def _check_unique(self, subject: str) -> None:
        taken = {s.wildcard for s in self.events} | {s.wildcard for s in self.endpoints}
        if _wildcard(subject) in taken:
            raise ValueError(f"subject {subject!r} is declared twice")
