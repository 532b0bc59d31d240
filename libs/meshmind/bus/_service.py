"""The service kit: typed endpoints over the NATS Services API (``nats.micro``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from nats.micro.request import Request
from nats.micro.request import ServiceError as _MicroServiceError
from nats.micro.service import Endpoint, EndpointConfig, EndpointStats, Service, ServiceConfig
from opentelemetry.trace import SpanKind

from meshmind.bus._bus import Bus, Subscription
from meshmind.bus._codec import decode, encode
from meshmind.bus._contract import EndpointSpec, EventSpec
from meshmind.bus._errors import ServiceError
from meshmind.bus._logging import get_logger
from meshmind.bus._message import Message
from meshmind.bus._supervision import task_restarts
from meshmind.bus._tracing import activated, extract, message_attributes, tracer

M = TypeVar("M", bound=Message)
Q = TypeVar("Q", bound=Message)
R = TypeVar("R", bound=Message)

QUEUE_GROUP = "meshmind"
BEAT_INTERVAL_S = 1.0
MAX_CONCURRENT_REQUESTS = 64
"""Requests one service handles at once; more wait in the subscription's queue."""

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

    def __init__(
        self,
        bus: Bus,
        name: str,
        version: str,
        description: str = "",
        *,
        max_concurrent: int = MAX_CONCURRENT_REQUESTS,
    ) -> None:
        self._bus = bus
        self.name = name
        self.version = version
        self.description = description
        self._bindings: list[_Binding[Any, Any]] = []
        self._subscriptions: list[Subscription] = []
        self._service = Service(
            bus._nc,
            ServiceConfig(
                name=name,
                version=version,
                description=description,
                metadata={"node": bus.node_id},
                queue_group=QUEUE_GROUP,
                stats_handler=self._stats,
            ),
        )
        self._running = False
        self._beating: asyncio.Task[None] | None = None
        self.invalid_requests: Counter[str] = Counter()
        self._slots = asyncio.Semaphore(max_concurrent)
        self._in_flight: set[asyncio.Task[None]] = set()

    def endpoint(
        self, spec: EndpointSpec[Q, R], handler: Callable[[Q], Awaitable[R]], **params: str
    ) -> None:
        """Serve ``spec`` (its subject rendered with ``params``) with ``handler``."""
        if spec.service != self.name:
            raise ValueError(f"{spec.subject} belongs to service {spec.service}, not {self.name}")
        if self._running:
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
        self._running = True
        await self._service.start()
        for binding in self._bindings:
            served: list[Endpoint] = []
            await self._service.add_endpoint(
                EndpointConfig(
                    name=binding.spec.name,
                    subject=binding.subject,
                    handler=functools.partial(self._dispatch, self._wrap(binding), served),
                    metadata={
                        "request": binding.spec.request.__name__,
                        "reply": binding.spec.reply.__name__,
                    },
                )
            )
            served.append(self._service._endpoints[-1])
        await self._bus.flush()
        self._beating = asyncio.create_task(self._beat())

    @property
    def queue_depth(self) -> int:
        """Messages delivered to this service and not yet handled."""
        subscriptions = [s._subscription for s in self._subscriptions]
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
        service = self._service
        subscriptions = [s._subscription for s in self._subscriptions]
        if self._running:
            self._running = False
            subscriptions += [e._subscription for e in service._endpoints if e._subscription]
            subscriptions += list(service._subscriptions.values())
            service._endpoints, service._subscriptions = [], {}
            service._stopped.set()
        await asyncio.gather(
            *(s.drain() for s in subscriptions if not s._closed)  # type: ignore[no-untyped-call]
        )
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        self._subscriptions.clear()

    async def _dispatch(
        self,
        handle: Callable[[Request], Awaitable[None]],
        served: list[Endpoint],
        request: Request,
    ) -> None:
        """Handle ``request`` in a task of its own, so that one endpoint serves many requests
        at once (nats-py runs a subscription's callbacks one after another); at most
        ``max_concurrent`` at a time, the rest wait in the subscription's queue."""
        await self._slots.acquire()
        task = asyncio.create_task(self._answer(handle, served[0], request))
        self._in_flight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slots.release()

    async def _answer(
        self, handle: Callable[[Request], Awaitable[None]], endpoint: Endpoint, request: Request
    ) -> None:
        """Run the handler; count and send its error reply as ``nats.micro`` would have."""
        started = time.perf_counter_ns()
        try:
            await handle(request)
        except _MicroServiceError as error:
            endpoint._num_errors += 1
            endpoint._last_error = repr(error)  # type: ignore[assignment]
            with contextlib.suppress(Exception):  # the requester may be gone: nothing to tell
                await request.respond_error(error.code, error.description)
        except Exception:  # the reply could not be sent: the connection is going
            _log.debug("reply.failed", endpoint=endpoint._name, exc_info=True)
        endpoint._processing_time += time.perf_counter_ns() - started
        endpoint._average_processing_time = endpoint._processing_time // max(
            1, endpoint._num_requests
        )

    @property
    def id(self) -> str:
        """This instance's id in the Services API (``$SRV.PING``), known from construction: it is
        also the instance id (``service.instance.id``) of the spans the process exports."""
        return self._service.id

    @property
    def dropped_messages(self) -> dict[str, int]:
        """Invalid messages dropped per subscribed subject pattern: this service's own
        subscriptions, and every other one on its connection that dropped any."""
        dropped = {s.subject: s.dropped for s in self._subscriptions}
        dropped.update(self._bus.dropped)
        return dropped

    def _stats(self, endpoint: EndpointStats) -> dict[str, Any]:
        return {
            "invalid_requests": self.invalid_requests[endpoint.name],
            "dropped_messages": self.dropped_messages,
            "task_restarts": task_restarts(),
        }

    def _wrap(self, binding: _Binding[Q, R]) -> Callable[[Request], Awaitable[None]]:
        spec = binding.spec
        max_size = min(spec.max_request_bytes, self._bus.settings.max_payload)
        span_name = f"process {spec.subject}"
        log = _log.bind(endpoint=spec.name, subject=binding.subject)
        attributes = {
            **message_attributes("process", binding.subject, spec.subject),
            "rpc.service": self.name,
            "rpc.method": spec.name,
        }

        async def handle(request: Request) -> None:
            span = tracer().start_span(
                span_name,
                context=extract(request.headers),
                kind=SpanKind.SERVER,
                attributes=attributes,
            )
            # A message published without a reply subject is handled, but nobody hears back.
            answered = bool(request._msg.reply)
            with activated(span):
                try:
                    message = decode(request.data, spec.request, max_size=max_size)
                except ServiceError as error:
                    self.invalid_requests[spec.name] += 1
                    log.warning("request.invalid", code=error.code, reason=error.description)
                    if not answered:
                        return
                    raise _MicroServiceError(str(error.code), error.description) from None
                try:
                    data = encode(await binding.handler(message))
                except ServiceError as error:
                    if not answered:
                        return
                    raise _MicroServiceError(str(error.code), error.description) from None
                except Exception as error:
                    span.record_exception(error)
                    log.exception("request.failed")
                    if not answered:
                        return
                    raise _MicroServiceError(
                        "500", f"internal error in {self.name}/{spec.name}: {type(error).__name__}"
                    ) from None
                if answered:
                    await request.respond(data)

        return handle
