"""Declarations of subjects and endpoints: what a protocol module is made of."""

from __future__ import annotations

import functools
import re
import string
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from meshmind.bus._message import Message
from meshmind.bus._settings import check_node_id

M = TypeVar("M", bound=Message)
Q = TypeVar("Q", bound=Message)
R = TypeVar("R", bound=Message)

_FORMATTER = string.Formatter()
_SUBJECT_TEMPLATE = re.compile(r"^mesh(\.([a-z0-9_-]+|\{[a-z_]+\}))+$")


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
    """An event subject and its payload model."""

    model: type[M]
    summary: str


@dataclass(frozen=True)
class EndpointSpec(_Addressed, Generic[Q, R]):
    """A request/reply endpoint of ``service``, served through the NATS Services API."""

    service: str
    name: str
    request: type[Q]
    reply: type[R]
    summary: str
    max_request_bytes: int = 256 * 1024


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

    def event(self, subject: str, model: type[M], summary: str) -> EventSpec[M]:
        """Declare an event subject and its payload model."""
        spec = EventSpec(subject, model, summary)
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
    ) -> EndpointSpec[Q, R]:
        """Declare an endpoint of ``service`` and its request and reply models."""
        spec = EndpointSpec(subject, service, name, request, reply, summary, max_request_bytes)
        self._check_unique(spec.subject)
        self.endpoints.append(spec)  # type: ignore[arg-type]
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
