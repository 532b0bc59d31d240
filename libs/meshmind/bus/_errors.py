"""Errors the bus raises and the service-error codes they travel as."""

from __future__ import annotations


class BusError(Exception):
    """Base class of every error the bus library raises."""


class ServiceError(BusError):
    """An error reply from a service endpoint (``Nats-Service-Error`` headers).

    Raise it from a handler to answer with ``code`` and ``description``; a caller's
    :meth:`Bus.request` raises it when the reply carries those headers.
    """

    def __init__(self, code: int, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


class BadRequest(ServiceError):
    """The request could not be decoded or validated (400)."""

    def __init__(self, description: str) -> None:
        super().__init__(400, description)


class PayloadTooLarge(ServiceError):
    """The message is larger than the configured limit (413)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(413, f"payload of {size} bytes exceeds the limit of {limit} bytes")


class UnsupportedVersion(ServiceError):
    """The payload carries a schema version this process does not speak (426)."""

    def __init__(self, got: object, supported: int, model: str) -> None:
        super().__init__(
            426, f"{model}: unsupported schema version {got!r}, this process speaks v{supported}"
        )


class NoResponders(BusError):
    """Nobody serves the subject a request was sent to."""


class RequestTimeout(BusError, TimeoutError):
    """No reply arrived before the deadline."""


class Disconnected(BusError):
    """This process is not connected to its NATS server: the connection is closed, draining, or
    reconnecting with its outbound buffer full, so nothing more can be sent now."""


class HubUnavailable(BusError):
    """The hub's JetStream (KV buckets, object stores) did not answer: the hub is out of reach."""
