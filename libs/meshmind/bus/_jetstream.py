"""Typed JetStream key-value buckets and object stores in the hub's domain."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import nats.js.errors
from nats.js.api import DEFAULT_PREFIX, KeyValueConfig, PubAck, StorageType
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue as _NatsKeyValue
from nats.js.object_store import ObjectStore as _NatsObjectStore

from meshmind.bus._codec import decode, encode
from meshmind.bus._errors import BusError, HubUnavailable, ServiceError
from meshmind.bus._logging import get_logger
from meshmind.bus._message import Message

M = TypeVar("M", bound=Message)

Operation = Literal["put", "delete", "expired"]

_log = get_logger(__name__)


@contextlib.contextmanager
def _hub_errors(what: str) -> Iterator[None]:
    try:
        yield
    except (
        nats.js.errors.KeyNotFoundError,
        nats.js.errors.KeyDeletedError,
        nats.js.errors.NoKeysError,
        nats.js.errors.ObjectNotFoundError,
    ):
        raise
    except (
        TimeoutError,
        nats.errors.TimeoutError,
        nats.errors.NoRespondersError,
        nats.js.errors.NoStreamResponseError,
        nats.js.errors.ServiceUnavailableError,
        nats.errors.ConnectionClosedError,
    ) as error:
        raise HubUnavailable(f"{what}: the hub did not answer ({type(error).__name__})") from None


@dataclass(frozen=True)
class KvEntry(Generic[M]):
    """A key's value at one revision; ``value`` is None once deleted or expired."""

    key: str
    value: M | None
    revision: int
    operation: Operation


class KeyValue(Generic[M]):
    """A bucket whose values are one message model."""

    def __init__(self, kv: _NatsKeyValue, model: type[M], max_size: int) -> None:
        self._kv = kv
        self._model = model
        self._max_size = max_size

    async def put(self, key: str, value: M) -> int:
        """Store ``value`` under ``key``; returns the new revision.

        Raises :class:`HubUnavailable` when the hub does not answer.
        """
        with _hub_errors(f"put {key}"):
            revision: int = await self._kv.put(key, encode(value))
        return revision

    async def get(self, key: str) -> KvEntry[M] | None:
        """The current entry of ``key``, or None when it has none."""
        try:
            with _hub_errors(f"get {key}"):
                entry = await self._kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        return self._entry(entry)

    async def delete(self, key: str) -> None:
        """Delete ``key`` (watchers see a ``delete``)."""
        with _hub_errors(f"delete {key}"):
            await self._kv.delete(key)

    async def keys(self) -> list[str]:
        """Every key that has a value now."""
        try:
            with _hub_errors("keys"):
                keys: list[str] = await self._kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        return keys

    async def values(self) -> dict[str, M]:
        """Every current value, by key; values that do not decode are logged and skipped."""
        found: dict[str, M] = {}
        for key in await self.keys():
            try:
                entry = await self.get(key)
            except ServiceError as error:
                _log.warning("kv.bad_value", key=key, reason=error.description)
                continue
            if entry is not None and entry.value is not None:
                found[key] = entry.value
        return found

    async def watch(self) -> AsyncGenerator[KvEntry[M], None]:
        """Each key's current entry, then every change as it happens.

        Values that do not decode are logged and skipped.
        """
        watcher = await self._kv.watchall()
        try:
            async for raw in watcher:
                if raw is None:
                    continue
                try:
                    yield self._entry(raw)
                except ServiceError as error:
                    _log.warning("kv.bad_value", key=raw.key, reason=error.description)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]

    def _entry(self, raw: _NatsKeyValue.Entry) -> KvEntry[M]:
        operation: Operation = {"DEL": "delete", "PURGE": "expired"}.get(raw.operation or "", "put")  # type: ignore[assignment]
        value = None
        if operation == "put" and not raw.value:  # a server marker that nats-py took for a put
            operation = "expired"
        elif operation == "put" and raw.value is not None:
            value = decode(raw.value, self._model, max_size=self._max_size)
        return KvEntry(raw.key, value, raw.revision or 0, operation)


@dataclass(frozen=True)
class ObjectInfo:
    """What the object store knows of one object."""

    name: str
    size: int
    digest: str


class ObjectStore:
    """A bucket of named binary objects, chunked by JetStream, of any size."""

    def __init__(self, store: _NatsObjectStore) -> None:
        self._store = store

    async def put(self, name: str, data: bytes) -> ObjectInfo:
        """Store ``data`` under ``name``, replacing what was there."""
        info = await self._store.put(name, data)
        return ObjectInfo(info.name, info.size or 0, info.digest or "")

    async def get(self, name: str) -> bytes:
        """The bytes stored under ``name``; :class:`KeyError` when there are none."""
        try:
            result = await self._store.get(name)
        except nats.js.errors.ObjectNotFoundError:
            raise KeyError(name) from None
        data: bytes = result.data or b""
        return data

    async def delete(self, name: str) -> None:
        """Remove ``name``."""
        await self._store.delete(name)

    async def list(self) -> list[ObjectInfo]:
        """Every object in the bucket."""
        try:
            infos = await self._store.list()
        except nats.js.errors.NotFoundError:
            return []
        return [ObjectInfo(i.name, i.size or 0, i.digest or "") for i in infos if not i.deleted]


class DomainJetStream(JetStreamContext):
    """A JetStream context bound to a domain that also routes KV writes there.

    nats-py sends a domain's API calls through ``$JS.<domain>.API`` but publishes ``$KV.*``
    writes on the bare subject, which a leaf node with JetStream of its own does not pass
    to the hub ("no response from stream"). As the Go client does, prefix those writes with
    the API prefix; the servers route them to the domain's stream. ``$O.*`` writes cross
    as they are.
    """

    async def publish(self, subject: str, *args: Any, **kwargs: Any) -> PubAck:
        if self._prefix != DEFAULT_PREFIX and subject.startswith("$KV."):
            subject = f"{self._prefix}.{subject}"
        ack: PubAck = await super().publish(subject, *args, **kwargs)
        return ack


class HubStore:
    """Creates or binds buckets in the hub's JetStream domain."""

    def __init__(self, js: JetStreamContext, max_size: int = 1024 * 1024) -> None:
        self._js = js
        self._max_size = max_size

    async def key_value(
        self,
        bucket: str,
        model: type[M],
        *,
        ttl_s: float | None = None,
        expiry_markers: bool = False,
        history: int = 1,
        replicas: int = 1,
        create: bool = True,
    ) -> KeyValue[M]:
        """The bucket ``bucket``, created with this configuration if it does not exist.

        ``ttl_s`` makes entries expire; with ``expiry_markers`` watchers see an ``expired``
        entry when one does (nats-server 2.11 or newer). With ``create=False`` an absent
        bucket raises :class:`KeyError` instead (readers must not shape a writer's bucket).
        """
        if not create:
            try:
                with _hub_errors(f"bind {bucket}"):
                    bound = await self._js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                raise KeyError(f"no bucket {bucket!r} in the hub") from None
            return KeyValue(bound, model, self._max_size)
        config = KeyValueConfig(
            bucket=bucket,
            ttl=ttl_s,
            history=history,
            replicas=replicas,
            storage=StorageType.FILE,
            limit_marker_ttl=ttl_s if expiry_markers and ttl_s else None,
        )
        try:
            kv = await self._js.create_key_value(config)
        except nats.js.errors.BadRequestError:
            kv = await self._js.key_value(bucket)
        except nats.errors.TimeoutError:
            raise BusError(f"the hub's JetStream did not answer creating bucket {bucket}") from None
        return KeyValue(kv, model, self._max_size)

    async def object_store(self, bucket: str, *, replicas: int = 1) -> ObjectStore:
        """The object store ``bucket``, created if it does not exist."""
        try:
            store = await self._js.create_object_store(bucket, replicas=replicas)
        except nats.js.errors.BadRequestError:
            store = await self._js.object_store(bucket)
        except nats.errors.TimeoutError:
            raise BusError(f"the hub's JetStream did not answer creating store {bucket}") from None
        return ObjectStore(store)
