"""The connection to the local NATS server: typed publish, subscribe and request, with tracing."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as _NatsSubscription
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from meshmind.bus._codec import decode, encode
from meshmind.bus._contract import EndpointSpec, EventSpec
from meshmind.bus._errors import (
    BusError,
    Disconnected,
    NoResponders,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
)
from meshmind.bus._jetstream import DomainJetStream, HubStore
from meshmind.bus._logging import get_logger
from meshmind.bus._message import Message
from meshmind.bus._redaction import redact
from meshmind.bus._settings import INBOX_PREFIX, BusSettings
from meshmind.bus._tracing import activated, extract, inject, message_attributes, tracer

M = TypeVar("M", bound=Message)
Q = TypeVar("Q", bound=Message)
R = TypeVar("R", bound=Message)

ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"

_log = get_logger(__name__)


class ProtocolError(BusError):
    """A reply could not be decoded as the model its endpoint declares."""


@dataclass(frozen=True)
class RawMessage:
    """A message as it travelled: subject, body and headers."""

    subject: str
    data: bytes
    headers: dict[str, str]

    @property
    def service_error(self) -> ServiceError | None:
        """The service error this reply carries in its headers, if any."""
        description = self.headers.get(ERROR_HEADER)
        if description is None:
            return None
        code = self.headers.get(ERROR_CODE_HEADER, "500")
        return ServiceError(int(code) if code.isascii() and code.isdigit() else 500, description)


class Subscription:
    """A live subscription; ``dropped`` counts messages that failed to decode or validate."""

    def __init__(self, subscription: _NatsSubscription) -> None:
        self._subscription = subscription
        self.dropped = 0
        self.failed = 0

    @property
    def subject(self) -> str:
        """The subject (or pattern) subscribed to."""
        return str(self._subscription.subject)

    async def unsubscribe(self) -> None:
        """Stop receiving messages."""
        with _client_errors("unsubscribe", self.subject):
            await self._subscription.unsubscribe()

    async def drain(self) -> None:
        """Stop receiving, after handling the messages already delivered."""
        with _client_errors("drain", self.subject):
            await self._subscription.drain()  # type: ignore[no-untyped-call]


def _headers(msg: Msg) -> dict[str, str]:
    return msg.headers or {}


_NOT_CONNECTED = (
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
)


_PERMISSION_DENIED = re.compile(
    r'permissions violation for (?:publish|subscription) to "?([^"\s]+)', re.I
)


def _denied_subject(error: str) -> str | None:
    """The subject of a server's "Permissions Violation" error, if ``error`` is one."""
    match = _PERMISSION_DENIED.search(error)
    return match.group(1) if match else None


@contextlib.contextmanager
def _client_errors(
    verb: str, subject: str, *, size: int = 0, limit: int = 0, timeout: float = 0.0
) -> Iterator[None]:
    """Every nats-py error of ``verb`` on ``subject`` as the :class:`BusError` that says what
    happened; nothing from the client escapes unmapped."""
    try:
        yield
    except nats.errors.NoRespondersError:
        raise NoResponders(f"nobody serves {subject}") from None
    except nats.errors.TimeoutError:
        raise RequestTimeout(f"no reply on {subject} within {timeout:g}s") from None
    except _NOT_CONNECTED as error:
        raise Disconnected(f"{verb} {subject}: not connected ({type(error).__name__})") from None
    except nats.errors.MaxPayloadError:
        raise PayloadTooLarge(size, limit) from None
    except nats.errors.Error as error:
        raise BusError(f"{verb} {subject}: {type(error).__name__}: {error}") from None


class Bus:
    """One process's connection to its local NATS server."""

    def __init__(self, nc: Client, settings: BusSettings, name: str) -> None:
        self._nc = nc
        self.settings = settings
        self.name = name
        self.dropped: Counter[str] = Counter()
        self.denied: Counter[str] = Counter()
        """Publishes and subscriptions the local server refused, per subject (lowercase: as
        the client reports it): this host's permissions do not allow them; nothing was sent."""
        self._closing = False

    @classmethod
    async def connect(
        cls, settings: BusSettings, *, name: str, connect_timeout_s: float = 30.0
    ) -> Bus:
        """Connect to the settings' NATS URL, retrying for up to ``connect_timeout_s``.

        Once connected, the connection reconnects forever after a loss.
        """
        log = _log.bind(servers=[redact(url) for url in settings.servers])
        closing: list[Bus] = []

        def deliberate() -> bool:
            return bool(closing) and closing[0]._closing

        async def on_error(error: Exception) -> None:
            denied = _denied_subject(str(error))
            if denied is not None and closing:
                closing[0].denied[denied] += 1
                log.error("nats.permission_denied", subject=denied, error=str(error))
            elif not deliberate():
                log.warning("nats.error", error=str(error))

        async def on_disconnect() -> None:
            if not deliberate():
                log.warning("nats.disconnected")

        async def on_reconnect() -> None:
            log.info("nats.reconnected")

        try:
            nc = await asyncio.wait_for(
                nats.connect(
                    servers=settings.servers,
                    name=f"{settings.node_id}/{name}",
                    inbox_prefix=f"{INBOX_PREFIX}.{settings.node_id}".encode(),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    pending_size=settings.nats_pending_bytes,
                    drain_timeout=int(settings.drain_timeout_s),
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                ),
                connect_timeout_s,
            )
        except (TimeoutError, OSError, nats.errors.Error) as error:
            reason = str(error) or f"no answer within {connect_timeout_s:g}s"
            raise BusError(redact(f"cannot reach NATS at {settings.nats_url}: {reason}")) from None
        bus = cls(nc, settings, name)
        closing.append(bus)
        return bus

    @property
    def node_id(self) -> str:
        """This host's id."""
        return self.settings.node_id

    @property
    def is_connected(self) -> bool:
        """Whether the connection to the local server is up now."""
        return bool(self._nc.is_connected)

    # --- typed messaging ------------------------------------------------------------------

    async def publish(self, spec: EventSpec[M], message: M, **params: str) -> None:
        """Publish ``message`` on the event subject rendered with ``params``."""
        subject = spec.render(**params)
        span = self._outbound_span("publish", spec.subject, subject, message, spec.model)
        try:
            data = encode(message)
            with self._errors("publish", subject, len(data)):
                await self._nc.publish(subject, data, headers=inject({}, span) or None)
        finally:
            span.end()

    async def subscribe(
        self,
        spec: EventSpec[M],
        handler: Callable[[M], Awaitable[None]],
        *,
        queue: str = "",
        **params: str,
    ) -> Subscription:
        """Call ``handler`` with every valid message on the spec's subject.

        Placeholders not given in ``params`` match any node. Invalid messages are dropped,
        logged and counted (``Subscription.dropped``, and ``Bus.dropped`` per subject pattern).
        """
        pattern = spec.pattern(**params)
        max_size = self.settings.max_payload
        span_name = f"process {spec.subject}"
        holder: list[Subscription] = []

        async def on_message(msg: Msg) -> None:
            subscription = holder[0]
            span = tracer().start_span(
                span_name,
                context=extract(msg.headers),
                kind=SpanKind.CONSUMER,
                attributes=message_attributes("process", msg.subject, spec.subject),
            )
            with activated(span):
                try:
                    message = decode(msg.data, spec.model, max_size=max_size)
                    if not spec.believes(msg.subject, message):
                        raise ServiceError(403, "the payload names another host than its subject")
                except ServiceError as error:
                    subscription.dropped += 1
                    self.dropped[pattern] += 1
                    span.set_status(Status(StatusCode.ERROR, error.description))
                    _log.warning("message.dropped", subject=msg.subject, reason=error.description)
                    return
                try:
                    await handler(message)
                except Exception as error:
                    subscription.failed += 1
                    span.record_exception(error)
                    span.set_status(Status(StatusCode.ERROR, repr(error)))
                    _log.exception("handler.failed", subject=msg.subject)

        with self._errors("subscribe", pattern):
            nats_subscription = await self._nc.subscribe(pattern, queue=queue, cb=on_message)
        subscription = Subscription(nats_subscription)
        holder.append(subscription)
        return subscription

    async def request(
        self, spec: EndpointSpec[Q, R], message: Q, *, timeout: float = 2.0, **params: str
    ) -> R:
        """Send ``message`` to the endpoint and return its typed reply.

        Raises :class:`ServiceError` for an error reply, :class:`NoResponders` when nobody
        serves the subject and :class:`RequestTimeout` when no reply comes in time.
        """
        subject = spec.render(**params)
        span = self._outbound_span("request", spec.subject, subject, message, spec.request)
        with activated(span):
            reply = await self._request(subject, encode(message), inject({}, span), timeout)
            error = reply.service_error
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, error.description))
                raise error
            try:
                answer = decode(reply.data, spec.reply, max_size=self.settings.max_payload)
            except ServiceError as bad:
                raise ProtocolError(f"bad reply on {subject}: {bad.description}") from None
            if not spec.believes(subject, answer):
                raise ProtocolError(f"the reply on {subject} names another host than its subject")
            return answer

    def _outbound_span(
        self, verb: str, template: str, subject: str, message: Message, model: type[Message]
    ) -> Span:
        if not isinstance(message, model):
            raise TypeError(f"{template} carries {model.__name__}, not {type(message).__name__}")
        return tracer().start_span(
            f"{verb} {template}",
            kind=SpanKind.CLIENT if verb == "request" else SpanKind.PRODUCER,
            attributes=message_attributes(verb, subject, template),
        )

    # --- raw messaging: for tools that speak subjects they do not model --------------------

    async def request_raw(
        self,
        subject: str,
        data: bytes = b"",
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 2.0,
    ) -> RawMessage:
        """Send raw bytes as a request and return the raw reply (error headers included)."""
        return await self._request(subject, data, headers, timeout)

    async def publish_raw(
        self, subject: str, data: bytes, *, headers: dict[str, str] | None = None
    ) -> None:
        """Publish raw bytes."""
        with self._errors("publish", subject, len(data)):
            await self._nc.publish(subject, data, headers=headers)

    async def subscribe_raw(
        self, subject: str, handler: Callable[[RawMessage], Awaitable[None]]
    ) -> Subscription:
        """Call ``handler`` with every message on ``subject``, undecoded."""

        async def on_message(msg: Msg) -> None:
            await handler(RawMessage(msg.subject, msg.data, _headers(msg)))

        with self._errors("subscribe", subject):
            return Subscription(await self._nc.subscribe(subject, cb=on_message))

    async def gather_raw(
        self, subject: str, data: bytes = b"", *, wait: float = 0.5
    ) -> list[RawMessage]:
        """Send one request and collect every reply that arrives within ``wait`` seconds."""
        inbox = self._nc.new_inbox()
        replies: list[RawMessage] = []

        async def on_reply(msg: Msg) -> None:
            replies.append(RawMessage(msg.subject, msg.data, _headers(msg)))

        with self._errors("subscribe", inbox):
            sub = await self._nc.subscribe(inbox, cb=on_reply)
        try:
            with self._errors("publish", subject, len(data)):
                await self._nc.publish(subject, data, reply=inbox)
            await asyncio.sleep(wait)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        return replies

    async def _request(
        self, subject: str, data: bytes, headers: dict[str, str] | None, timeout: float
    ) -> RawMessage:
        with self._errors("request", subject, len(data), timeout):
            msg = await self._nc.request(subject, data, timeout=timeout, headers=headers)
        return RawMessage(msg.subject, msg.data, _headers(msg))

    def _errors(
        self, verb: str, subject: str, size: int = 0, timeout: float = 0.0
    ) -> contextlib.AbstractContextManager[None]:
        return _client_errors(verb, subject, size=size, limit=self._nc.max_payload, timeout=timeout)

    # --- storage ---------------------------------------------------------------

    def hub(self) -> HubStore:
        """JetStream KV buckets and object stores in the hub's domain."""
        js = DomainJetStream(self._nc, domain=self.settings.hub_domain)
        return HubStore(js, self.settings.max_payload)

    # --- lifecycle ----------------------------------------------------------------------------

    async def flush(self, timeout: int = 2) -> None:
        """Wait until the server has processed everything sent so far."""
        with self._errors("flush", "the connection", timeout=timeout):
            await self._nc.flush(timeout=timeout)

    async def drain(self) -> None:
        """Finish in-flight messages, flush what was published, then close."""
        self._closing = True
        if not self._nc.is_closed:
            await self._nc.drain()

    async def close(self) -> None:
        """Close at once."""
        self._closing = True
        if not self._nc.is_closed:
            await self._nc.close()
