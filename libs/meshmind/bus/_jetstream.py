"""Typed JetStream key-value buckets and object stores in the hub's domain."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import (
    DEFAULT_PREFIX,
    Header,
    KeyValueConfig,
    PubAck,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext
from nats.js.object_store import ObjectStore as _NatsObjectStore
from opentelemetry import context as otel_context
from opentelemetry.trace import Span, SpanKind

from meshmind.bus._bucket_config import BucketSpec, drift, reconciled
from meshmind.bus._codec import decode, encode
from meshmind.bus._errors import BusError, ServiceError
from meshmind.bus._hub_errors import hub_errors
from meshmind.bus._kv_reader import ConsumerReader
from meshmind.bus._logging import get_logger
from meshmind.bus._message import Message
from meshmind.bus._tracing import activated, extract, inject, tracer

M = TypeVar("M", bound=Message)

Operation = Literal["put", "delete", "expired"]

KV_OPERATION = "KV-Operation"
MARKER_REASON = "Nats-Marker-Reason"
WRONG_LAST_SEQUENCE = (10071, 10164)
"""The hub's error codes for a write whose expected revision is not the key's last."""
WATCH_HEARTBEAT_S = 0.5
"""How often the hub proves a quiet watch alive."""
_KEY = re.compile(r"^[-/_=.a-zA-Z0-9]+$")

_log = get_logger(__name__)


@dataclass(frozen=True)
class KvEntry(Generic[M]):
    """A key's value at one revision; ``value`` is None once deleted or expired.

    ``headers`` are the ones the entry was written with; :attr:`context` is the trace
    context they carry, so a reader can continue the writer's trace.
    """

    key: str
    value: M | None
    revision: int
    operation: Operation
    headers: Mapping[str, str] = field(default_factory=dict, compare=False)
    written_at: float | None = field(default=None, compare=False)
    """Unix time the hub stored the entry (its clock), where the read tells."""

    @property
    def context(self) -> otel_context.Context | None:
        """The writer's trace context (W3C ``traceparent``), if the entry carries one."""
        return extract(self.headers)


@dataclass(frozen=True)
class KvSnapshot(Generic[M]):
    """Every key that has a value, complete as of one moment: the start of a watch, or its
    re-establishment after the hub lost it (whatever changed meanwhile is in here)."""

    entries: dict[str, KvEntry[M]]

    def values(self) -> dict[str, M]:
        """Each key's value."""
        return {k: e.value for k, e in self.entries.items() if e.value is not None}


def _operation(headers: Mapping[str, str], data: bytes) -> Operation:
    op = headers.get(KV_OPERATION)
    if op == "DEL" or headers.get(MARKER_REASON) == "Remove":
        return "delete"
    if op == "PURGE" or MARKER_REASON in headers or not data:
        return "expired"  # a TTL marker, a purge, or a server marker nats-py took for a put
    return "put"


class KeyValue(Generic[M]):
    """A bucket whose values are one message model.

    Every error from the hub is a :class:`BusError`: :class:`HubUnavailable` when it did not
    answer. Writes carry the current trace context; reads and writes get spans.
    """

    def __init__(
        self,
        js: JetStreamContext,
        bucket: str,
        model: type[M],
        max_size: int,
        *,
        direct: bool = False,
    ) -> None:
        self._js = js
        self.bucket = bucket
        self.stream = f"KV_{bucket}"
        self._prefix = f"$KV.{bucket}."
        self._model = model
        self._max_size = max_size
        self._direct = direct
        self._tracer = tracer()

    def _span(self, operation: str, destination: str, kind: SpanKind) -> Span:
        return self._tracer.start_span(
            f"{operation} {self._prefix}*",
            kind=kind,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": destination,
                "messaging.operation": operation,
            },
        )

    def _subject(self, key: str) -> str:
        if not _KEY.match(key) or key.startswith(".") or key.endswith("."):
            raise BusError(f"{key!r} is not a valid key of bucket {self.bucket}")
        return f"{self._prefix}{key}"

    async def put(self, key: str, value: M) -> int:
        """Store ``value`` under ``key``; returns the new revision.

        Raises :class:`HubUnavailable` when the hub does not answer.
        """
        subject = self._subject(key)
        span = self._span("publish", subject, SpanKind.PRODUCER)
        with activated(span), hub_errors(f"put {key} in {self.bucket}"):
            ack = await self._js.publish(subject, encode(value), headers=inject({}, span) or None)
        return ack.seq

    async def get(self, key: str) -> KvEntry[M] | None:
        """The current entry of ``key``, or None when it has none."""
        entry = await self.latest(key)
        return entry if entry is not None and entry.value is not None else None

    async def latest(self, key: str) -> KvEntry[M] | None:
        """The last entry of ``key``, a delete or expiry included (its revision is what
        :meth:`update` expects next); None when the key was never written."""
        subject = self._subject(key)
        with (
            activated(self._span("receive", subject, SpanKind.CLIENT)),
            hub_errors(f"get {key} from {self.bucket}"),
        ):
            try:
                raw = await self._js.get_msg(self.stream, subject=subject, direct=self._direct)
            except nats.js.errors.NotFoundError:
                return None
        headers = raw.headers or {}
        entry = self._entry(key, raw.data or b"", raw.seq or 0, headers)
        if raw.time is None:
            return entry
        return dataclasses.replace(entry, written_at=raw.time.timestamp())

    async def update(self, key: str, value: M, *, last: int) -> int | None:
        """Store ``value`` under ``key`` only if the key's last revision (a delete included) is
        ``last`` (0: the key was never written); the new revision, or None when it was not."""
        subject = self._subject(key)
        span = self._span("publish", subject, SpanKind.PRODUCER)
        headers = inject({Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(last)}, span)
        with activated(span), hub_errors(f"update {key} in {self.bucket}"):
            try:
                ack = await self._js.publish(subject, encode(value), headers=headers)
            except nats.js.errors.APIError as error:
                if error.err_code in WRONG_LAST_SEQUENCE:
                    return None
                raise
        return ack.seq

    async def delete(self, key: str, *, revision: int | None = None) -> bool:
        """Delete ``key`` (watchers see a ``delete``); with ``revision``, only if that is still
        the key's last revision. Returns whether the key was deleted."""
        subject = self._subject(key)
        span = self._span("publish", subject, SpanKind.PRODUCER)
        headers = inject({KV_OPERATION: "DEL"}, span)
        if revision is not None:
            headers[Header.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(revision)
        with activated(span), hub_errors(f"delete {key} from {self.bucket}"):
            try:
                await self._js.publish(subject, b"", headers=headers)
            except nats.js.errors.APIError as error:
                if error.err_code in WRONG_LAST_SEQUENCE:
                    return False
                raise
        return True

    async def keys(self) -> list[str]:
        """Every key that has a value now, in one read (headers only)."""
        return sorted((await self._read(headers_only=True)).entries)

    async def values(self) -> dict[str, M]:
        """Every current value, by key, in one read: a single ordered consumer delivering the
        last message of each key, deleted once it has delivered them all. Values that do not
        decode are logged and skipped."""
        return (await self._read(headers_only=False)).values()

    async def _read(self, *, headers_only: bool) -> KvSnapshot[M]:
        with activated(self._span("receive", f"{self._prefix}>", SpanKind.CLIENT)):
            reader = self._reader(WATCH_HEARTBEAT_S, headers_only=headers_only)
            try:
                await reader.open()
                return await self._snapshot(reader, headers_only=headers_only)
            finally:
                await reader.close()

    def _reader(self, heartbeat_s: float, *, headers_only: bool = False) -> ConsumerReader:
        return ConsumerReader(
            self._js,
            self.stream,
            f"{self._prefix}>",
            heartbeat_s=heartbeat_s,
            headers_only=headers_only,
        )

    async def _snapshot(self, reader: ConsumerReader, *, headers_only: bool) -> KvSnapshot[M]:
        entries: dict[str, KvEntry[M]] = {}
        while not reader.caught_up_at_start:
            msg = await reader.next()
            entry = self._message_entry(msg, headers_only=headers_only)
            if entry is not None and entry.operation == "put":
                entries[entry.key] = entry
            elif entry is not None:
                entries.pop(entry.key, None)
            if msg.metadata.num_pending == 0:
                break
        return KvSnapshot(entries)

    def follow(self, *, heartbeat_s: float = WATCH_HEARTBEAT_S) -> KvWatch[M]:
        """A watch that survives the hub losing it: a :class:`KvSnapshot` first, then every
        change as a :class:`KvEntry`, and a fresh snapshot whenever the watch had to be
        re-established (see :class:`KvWatch`)."""
        return KvWatch(self, heartbeat_s)

    async def watch(self) -> AsyncGenerator[KvEntry[M], None]:
        """Each key's current entry, then every change as it happens. A watch the hub lost
        is re-established and replays each key's current entry; values that do not decode
        are logged and skipped. Use :meth:`follow` to learn of keys removed meanwhile."""
        async with self.follow() as watch:
            async for item in watch:
                if isinstance(item, KvSnapshot):
                    for entry in item.entries.values():
                        yield entry
                else:
                    yield item

    def _message_entry(self, msg: Msg, *, headers_only: bool = False) -> KvEntry[M] | None:
        key = msg.subject.removeprefix(self._prefix)
        headers = msg.headers or {}
        revision = msg.metadata.sequence.stream
        if headers_only:
            size = headers.get("Nats-Msg-Size", "0")
            operation = _operation(headers, b"x" if size != "0" else b"")
            return KvEntry(key, None, revision, operation, headers)
        try:
            return self._entry(key, msg.data, revision, headers)
        except ServiceError as error:
            _log.warning("kv.bad_value", bucket=self.bucket, key=key, reason=error.description)
            return None

    def _entry(
        self, key: str, data: bytes, revision: int, headers: Mapping[str, str]
    ) -> KvEntry[M]:
        operation = _operation(headers, data)
        value = decode(data, self._model, max_size=self._max_size) if operation == "put" else None
        return KvEntry(key, value, revision, operation, dict(headers))


class KvWatch(Generic[M]):
    """A bucket watch that is re-established whenever the hub loses it.

    Iterating yields a :class:`KvSnapshot` of the whole bucket, then each change as a
    :class:`KvEntry`; when the consumer is lost (deleted on the hub, silent for three idle
    heartbeats, or a message was skipped) it is deleted, a new one is created and a new
    snapshot yielded, so a reader reconciles instead of guessing. Silence is not news:
    :meth:`silent_s` says how long the hub has not been heard, heartbeats included.
    Use as an async context manager: leaving it deletes the consumer.
    """

    def __init__(self, kv: KeyValue[M], heartbeat_s: float) -> None:
        self._kv = kv
        self._heartbeat_s = heartbeat_s
        self._reader: ConsumerReader | None = None
        self.restarts = 0
        self.replaying = True
        """Whether the watch is (re)reading the bucket and its snapshot is not yet taken in:
        what it heard meanwhile says the hub answers, not that the view is current."""
        self._heard_at = time.monotonic()

    def silent_s(self) -> float:
        """Seconds since the hub last sent this watch anything, over every consumer it used
        (since the watch started, if nothing yet)."""
        reader = self._reader
        if reader is not None and reader.heard_at is not None:
            self._heard_at = max(self._heard_at, reader.heard_at)
        return time.monotonic() - self._heard_at

    async def __aenter__(self) -> KvWatch[M]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop watching and delete the consumer."""
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()

    def __aiter__(self) -> AsyncIterator[KvSnapshot[M] | KvEntry[M]]:
        return self._run()

    async def _run(self) -> AsyncGenerator[KvSnapshot[M] | KvEntry[M], None]:
        failures = 0
        while True:
            self.silent_s()  # keep what the previous consumer heard
            reader = self._reader = self._kv._reader(self._heartbeat_s)
            try:
                self.replaying = True
                await reader.open()
                yield await self._kv._snapshot(reader, headers_only=False)
                self.replaying = False
                failures = 0
                while True:
                    entry = self._kv._message_entry(await reader.next())
                    if entry is not None:
                        yield entry
            except BusError as error:
                self.replaying = True  # what follows the loss is unknown until the next snapshot
                failures += 1
                self.restarts += 1
                _log.warning("kv.watch_lost", bucket=self._kv.bucket, error=str(error))
            finally:
                await reader.close()
            await asyncio.sleep(0 if failures <= 1 else min(5.0, self._heartbeat_s * failures))


def _stored_at(time_: datetime.datetime | None) -> float:
    return time_.timestamp() if time_ is not None else 0.0


@dataclass(frozen=True)
class StreamRecord(Generic[M]):
    """One message of a :class:`Stream`: its sequence number, its token and its value."""

    seq: int
    token: str
    value: M
    at: float
    """Unix time the hub stored it (its clock)."""


class Stream(Generic[M]):
    """An append-only stream of one message model in the hub's domain, one subject token per
    record (``<prefix>.<token>``), with optimistic appends."""

    def __init__(self, js: JetStreamContext, name: str, prefix: str, model: type[M], max_size: int):
        self._js = js
        self.name = name
        self._prefix = prefix
        self._model = model
        self._max_size = max_size

    async def append(
        self,
        token: str,
        value: M,
        *,
        expected_last_seq: int | None = None,
        expected_last_token_seq: int | None = None,
    ) -> int | None:
        """Append ``value`` under ``token``; with ``expected_last_seq`` only if that is the
        stream's last sequence, with ``expected_last_token_seq`` only if that is the token's
        (0: the token was never used). The new sequence, or None when an expectation failed."""
        subject = f"{self._prefix}.{token}"
        headers: dict[str, str] = {}
        if expected_last_seq is not None:
            headers[Header.EXPECTED_LAST_SEQUENCE] = str(expected_last_seq)
        if expected_last_token_seq is not None:
            headers[Header.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(expected_last_token_seq)
        with hub_errors(f"append to {self.name}"):
            try:
                ack = await self._js.publish(
                    subject, encode(value), stream=self.name, headers=headers or None
                )
            except nats.js.errors.APIError as error:
                if error.err_code in WRONG_LAST_SEQUENCE:
                    return None
                raise
        return ack.seq

    async def last_of(self, token: str) -> StreamRecord[M] | None:
        """The last record appended under ``token``, if any."""
        with hub_errors(f"read {self.name}"):
            try:
                raw = await self._js.get_msg(self.name, subject=f"{self._prefix}.{token}")
            except nats.js.errors.NotFoundError:
                return None
        value = decode(raw.data or b"", self._model, max_size=self._max_size)
        return StreamRecord(raw.seq or 0, token, value, _stored_at(raw.time))

    async def last_seq(self) -> int:
        """The stream's last sequence number (0: empty)."""
        with hub_errors(f"info {self.name}"):
            info = await self._js.stream_info(self.name)
        return int(info.state.last_seq or 0)

    async def read(self, after: int, limit: int) -> list[StreamRecord[M]]:
        """Up to ``limit`` records with sequence numbers above ``after``, in order."""
        records: list[StreamRecord[M]] = []
        last = await self.last_seq()
        seq = after + 1
        with hub_errors(f"read {self.name}"):
            while seq <= last and len(records) < limit:
                try:
                    raw = await self._js.get_msg(self.name, seq=seq, next=True)
                except nats.js.errors.NotFoundError:
                    break
                token = (raw.subject or "").removeprefix(f"{self._prefix}.")
                value = decode(raw.data or b"", self._model, max_size=self._max_size)
                records.append(StreamRecord(raw.seq or seq, token, value, _stored_at(raw.time)))
                seq = (raw.seq or seq) + 1
        return records


@dataclass(frozen=True)
class ObjectInfo:
    """What the object store knows of one object."""

    name: str
    size: int
    digest: str


class ObjectStore:
    """A bucket of named binary objects, chunked by JetStream, of any size."""

    def __init__(self, store: _NatsObjectStore, bucket: str) -> None:
        self._store = store
        self._bucket = bucket

    async def put(self, name: str, data: bytes) -> ObjectInfo:
        """Store ``data`` under ``name``, replacing what was there."""
        with hub_errors(f"put {name} in {self._bucket}"):
            info = await self._store.put(name, data)
        return ObjectInfo(info.name, info.size or 0, info.digest or "")

    async def get(self, name: str) -> bytes:
        """The bytes stored under ``name``; :class:`KeyError` when there are none."""
        with hub_errors(f"get {name} from {self._bucket}"):
            try:
                result = await self._store.get(name)
            except nats.js.errors.NotFoundError:
                raise KeyError(name) from None
        data: bytes = result.data or b""
        return data

    async def delete(self, name: str) -> None:
        """Remove ``name``."""
        with hub_errors(f"delete {name} from {self._bucket}"):
            await self._store.delete(name)

    async def list(self) -> list[ObjectInfo]:
        """Every object in the bucket."""
        with hub_errors(f"list {self._bucket}"):
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
        entry when one does (nats-server 2.11 or newer). An existing bucket configured
        otherwise is updated to this configuration where the hub allows it (TTL, history,
        replicas, expiry markers); where it does not, :class:`BusError` names the bucket,
        field, wanted and found value. With ``create=False`` the bucket is bound as it is,
        and an absent one raises :class:`KeyError` (readers must not shape a writer's bucket).
        """
        stream = f"KV_{bucket}"
        with hub_errors(f"bind {bucket}"):
            try:
                info = await self._js.stream_info(stream)
            except nats.js.errors.NotFoundError:
                info = None
            if info is None and not create:
                raise KeyError(f"no bucket {bucket!r} in the hub")
            if info is None:
                spec = BucketSpec(ttl_s, history, replicas, expiry_markers)
                try:
                    await self._create(bucket, spec)
                    return KeyValue(self._js, bucket, model, self._max_size)
                except nats.js.errors.BadRequestError:  # created meanwhile by another host
                    info = await self._js.stream_info(stream)
        if create:
            await self._reconcile(
                bucket, info.config, BucketSpec(ttl_s, history, replicas, expiry_markers)
            )
        return KeyValue(
            self._js, bucket, model, self._max_size, direct=bool(info.config.allow_direct)
        )

    async def _create(self, bucket: str, spec: BucketSpec) -> None:
        await self._js.create_key_value(
            KeyValueConfig(
                bucket=bucket,
                ttl=spec.ttl_s,
                history=spec.history,
                replicas=spec.replicas,
                storage=spec.storage,
                limit_marker_ttl=spec.marker_ttl_s,
            )
        )

    async def _reconcile(self, bucket: str, found: Any, spec: BucketSpec) -> None:
        drifts = drift(found, spec)
        if not drifts:
            return
        fixed = [d for d in drifts if d.updatable]
        refused = [d for d in drifts if not d.updatable]
        if refused:
            raise BusError(
                f"bucket {bucket} exists with another configuration the hub cannot change "
                f"({'; '.join(map(str, refused))})"
            )
        try:
            with hub_errors(f"update bucket {bucket}"):
                await self._js.update_stream(reconciled(found, spec))
        except BusError as error:
            raise BusError(
                f"bucket {bucket} exists with another configuration "
                f"({'; '.join(map(str, fixed))}) and the hub refused to change it: {error}"
            ) from None
        _log.warning("kv.bucket_reconciled", bucket=bucket, changed=[str(d) for d in fixed])

    async def stream(
        self, name: str, prefix: str, model: type[M], *, replicas: int = 1
    ) -> Stream[M]:
        """The stream ``name`` capturing ``<prefix>.*``, created if it does not exist (file
        storage, nothing discarded, no deletes)."""
        config = StreamConfig(
            name=name,
            subjects=[f"{prefix}.*"],
            storage=StorageType.FILE,
            num_replicas=replicas,
            deny_delete=True,
            allow_direct=False,
        )
        with hub_errors(f"bind stream {name}"):
            try:
                await self._js.stream_info(name)
            except nats.js.errors.NotFoundError:
                try:
                    await self._js.add_stream(config)
                except nats.js.errors.BadRequestError:  # created meanwhile by another host
                    await self._js.stream_info(name)
        return Stream(self._js, name, prefix, model, self._max_size)

    async def object_store(self, bucket: str, *, replicas: int = 1) -> ObjectStore:
        """The object store ``bucket``, created if it does not exist."""
        with hub_errors(f"bind store {bucket}"):
            try:
                store = await self._js.create_object_store(bucket, replicas=replicas)
            except nats.js.errors.BadRequestError:
                store = await self._js.object_store(bucket)
        return ObjectStore(store, bucket)
