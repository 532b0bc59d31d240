"""The service kit: typed endpoints over the NATS Services API (``nats.micro``)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.request import ServiceError as _MicroServiceError
from nats.micro.service import EndpointConfig, EndpointStats, Service, ServiceConfig
from opentelemetry.trace import SpanKind

from meshmind.bus._bus import Bus, Subscription
from meshmind.bus._codec import decode, encode
from meshmind.bus._contract import EndpointSpec, EventSpec
from meshmind.bus._errors import ServiceError
from meshmind.bus._logging import get_logger
from meshmind.bus._message import Message
from meshmind.bus._tracing import activated, extract
from meshmind.bus._tracing import tracer as bus_tracer

M = TypeVar("M", bound=Message)
Q = TypeVar("Q", bound=Message)
R = TypeVar("R", bound=Message)

QUEUE_GROUP = "meshmind"
BEAT_INTERVAL_S = 1.0

_log = get_logger(__name__)


@dataclass(frozen=True)
class _Binding(Generic[Q, R]):
    spec: EndpointSpec[Q, R]
    subject: str
    handler: Callable[[Q], Awaitable[R]]


class ServiceKit:
    """A named service: typed endpoints, typed subscriptions, stats in ``$SRV.STATS``.

    Declare endpoints and subscriptions, then :meth:`start`. Bad input never reaches a
    handler: it is answered with ``Nats-Service-Error`` headers (400/413/426) and counted;
    a handler's :class:`ServiceError` goes back as is, any other exception as a 500.
    """

    def __init__(self, bus: Bus, nc: Client, *, name: str, version: str, description: str) -> None:
        self._bus = bus
        self._nc = nc
        self.name = name
        self.version = version
        self.description = description
        self._bindings: list[_Binding[Any, Any]] = []
        self._subscriptions: list[Subscription] = []
        self._service: Service | None = None
        self._beating: asyncio.Task[None] | None = None
        self.invalid_requests: Counter[str] = Counter()

    def endpoint(
        self, spec: EndpointSpec[Q, R], handler: Callable[[Q], Awaitable[R]], **params: str
    ) -> None:
        """Serve ``spec`` (its subject rendered with ``params``) with ``handler``."""
        if spec.service != self.name:
            raise ValueError(f"{spec.subject} belongs to service {spec.service}, not {self.name}")
        if self._service is not None:
            raise RuntimeError("declare endpoints before start()")
        self._bindings.append(_Binding(spec, spec.render(**params), handler))

    async def subscribe(
        self,
        spec: EventSpec[M],
        handler: Callable[[M], Awaitable[None]],
        *,
        queue: str = "",
        **params: str,
    ) -> Subscription:
        """Subscribe through the bus; drops are reported in this service's stats."""
        subscription = await self._bus.subscribe(spec, handler, queue=queue, **params)
        self._subscriptions.append(subscription)
        return subscription

    async def start(self) -> None:
        """Register the service and its endpoints with the server."""
        self._service = await add_service(
            self._nc,
            ServiceConfig(
                name=self.name,
                version=self.version,
                description=self.description,
                metadata={"node": self._bus.node_id},
                queue_group=QUEUE_GROUP,
                stats_handler=self._stats,
            ),
        )
        for binding in self._bindings:
            await self._service.add_endpoint(
                EndpointConfig(
                    name=binding.spec.name,
                    subject=binding.subject,
                    handler=self._wrap(binding),
                    metadata={
                        "request": binding.spec.request.__name__,
                        "reply": binding.spec.reply.__name__,
                    },
                )
            )
        await self._bus.flush()
        self._beating = asyncio.create_task(self._beat())

    @property
    def queue_depth(self) -> int:
        """Messages delivered to this service and not yet handled."""
        subscriptions = [s._subscription for s in self._subscriptions]
        if self._service is not None:
            subscriptions += [e._subscription for e in self._service._endpoints if e._subscription]
        return sum(s.pending_msgs for s in subscriptions)

    async def _beat(self) -> None:
        """Tell this host's discovery, every second, that this service runs and what it queues."""
        from meshmind.bus.protocol import SERVICE_BEATS, ServiceBeat

        node = self._bus.node_id
        while True:
            beat = ServiceBeat(
                node=node, service=self.name, instance=self.id, queue_depth=self.queue_depth
            )
            try:
                await self._bus.publish(SERVICE_BEATS, beat, node=node)
            except Exception as error:  # a beat lost to a reconnect is sent again next second
                _log.debug("beat.failed", error=repr(error))
            await asyncio.sleep(BEAT_INTERVAL_S)

    async def stop(self) -> None:
        """Stop taking requests and messages, and wait for the ones in flight to finish.

        ``nats.micro``'s own ``stop`` unsubscribes endpoints, which cancels handlers that are
        running; here every subscription is drained instead.
        """
        if self._beating is not None:
            self._beating.cancel()
            self._beating = None
        service, self._service = self._service, None
        subscriptions = [s._subscription for s in self._subscriptions]
        if service is not None:
            subscriptions += [e._subscription for e in service._endpoints if e._subscription]
            subscriptions += list(service._subscriptions.values())
            service._endpoints, service._subscriptions = [], {}
            service._stopped.set()
        await asyncio.gather(
            *(s.drain() for s in subscriptions if not s._closed)  # type: ignore[no-untyped-call]
        )
        self._subscriptions.clear()

    @property
    def id(self) -> str:
        """This instance's id in the Services API (``$SRV.PING``)."""
        if self._service is None:
            raise RuntimeError("the service is not started")
        return self._service.id

    def _stats(self, endpoint: EndpointStats) -> dict[str, Any]:
        return {
            "invalid_requests": self.invalid_requests[endpoint.name],
            "dropped_messages": {s.subject: s.dropped for s in self._subscriptions},
        }

    def _wrap(self, binding: _Binding[Q, R]) -> Callable[[Request], Awaitable[None]]:
        spec = binding.spec
        max_size = min(spec.max_request_bytes, self._bus.settings.max_payload)
        span_name = f"process {spec.subject}"
        tracer = bus_tracer()
        log = _log.bind(endpoint=spec.name, subject=binding.subject)
        attributes = {"messaging.system": "nats", "rpc.service": self.name, "rpc.method": spec.name}

        async def handle(request: Request) -> None:
            span = tracer.start_span(
                span_name,
                context=extract(request.headers),
                kind=SpanKind.SERVER,
                attributes=attributes,
            )
            with activated(span):
                try:
                    message = decode(request.data, spec.request, max_size=max_size)
                except ServiceError as error:
                    self.invalid_requests[spec.name] += 1
                    log.warning("request.invalid", code=error.code, reason=error.description)
                    raise _MicroServiceError(str(error.code), error.description) from None
                try:
                    reply = await binding.handler(message)
                except ServiceError as error:
                    raise _MicroServiceError(str(error.code), error.description) from None
                except Exception as error:
                    span.record_exception(error)
                    log.exception("request.failed")
                    raise _MicroServiceError(
                        "500", f"internal error in {self.name}/{spec.name}: {type(error).__name__}"
                    ) from None
                await request.respond(encode(reply))

        return handle
