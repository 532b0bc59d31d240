"""Mapping every nats-py error raised by the hub's JetStream to the bus's own errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import nats.errors
import nats.js.errors

from meshmind.bus._errors import BusError, HubUnavailable

_UNREACHABLE: tuple[type[BaseException], ...] = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoServersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
)
"""Errors that say the hub (or the way to it) did not answer, as opposed to refusing."""


@contextlib.contextmanager
def hub_errors(what: str) -> Iterator[None]:
    """Raise :class:`HubUnavailable` when the hub did not answer and :class:`BusError` for any
    other nats-py error (a refusal, a bad subject, ...): nothing from nats-py escapes raw."""
    try:
        yield
    except BusError:
        raise
    except _UNREACHABLE as error:
        raise HubUnavailable(f"{what}: the hub did not answer ({type(error).__name__})") from None
    except nats.js.errors.APIError as error:
        raise BusError(
            f"{what}: the hub refused ({error.code} {error.err_code}: {error.description})"
        ) from None
    except nats.errors.Error as error:
        raise BusError(f"{what}: {type(error).__name__}: {error}") from None
