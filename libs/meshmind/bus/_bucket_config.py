"""What a bucket is asked to be against what the hub holds: drift, and the update that fixes it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from nats.js.api import StorageType, StreamConfig

_CLOSE = 1e-3


@dataclass(frozen=True)
class BucketSpec:
    """The configuration a caller asks of a KV bucket."""

    ttl_s: float | None
    history: int
    replicas: int
    expiry_markers: bool
    storage: StorageType = StorageType.FILE

    @property
    def marker_ttl_s(self) -> float | None:
        """How long the hub keeps an expiry marker (the TTL), when markers are asked for."""
        return self.ttl_s if self.expiry_markers and self.ttl_s else None


@dataclass(frozen=True)
class Drift:
    """One field where the existing bucket differs from what is asked."""

    field: str
    wanted: object
    found: object
    updatable: bool

    def __str__(self) -> str:
        return f"{self.field}: wanted {self.wanted!r}, found {self.found!r}"


def _seconds(value: float | None) -> float | None:
    return value if value else None  # the hub says 0 for "none"


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) < _CLOSE


def drift(found: StreamConfig, spec: BucketSpec) -> list[Drift]:
    """Every field of ``found`` that differs from ``spec``, and whether the hub can update it."""
    drifts: list[Drift] = []
    ttl = _seconds(found.max_age)
    if not _same(ttl, spec.ttl_s):
        drifts.append(Drift("ttl_s", spec.ttl_s, ttl, updatable=True))
    if found.max_msgs_per_subject != spec.history:
        drifts.append(Drift("history", spec.history, found.max_msgs_per_subject, updatable=True))
    if (found.num_replicas or 1) != spec.replicas:
        drifts.append(Drift("replicas", spec.replicas, found.num_replicas or 1, updatable=True))
    if spec.expiry_markers and not found.allow_msg_ttl:
        drifts.append(Drift("allow_msg_ttl", True, bool(found.allow_msg_ttl), updatable=True))
    marker_ttl = _seconds(found.subject_delete_marker_ttl)
    if not _same(marker_ttl, spec.marker_ttl_s):
        drifts.append(Drift("expiry_markers", spec.marker_ttl_s, marker_ttl, updatable=True))
    if found.storage is not None and StorageType(found.storage) != spec.storage:
        drifts.append(
            Drift("storage", spec.storage.value, StorageType(found.storage).value, updatable=False)
        )
    return drifts


def reconciled(found: StreamConfig, spec: BucketSpec) -> StreamConfig:
    """``found`` with every updatable field set as ``spec`` asks (the duplicate window may not
    outlast the TTL, so it shrinks with it)."""
    window = found.duplicate_window
    if spec.ttl_s and (not window or window > spec.ttl_s):
        window = spec.ttl_s
    return dataclasses.replace(
        found,
        duplicate_window=window,
        max_age=spec.ttl_s or 0,
        max_msgs_per_subject=spec.history,
        num_replicas=spec.replicas,
        allow_msg_ttl=True if spec.expiry_markers else found.allow_msg_ttl,
        subject_delete_marker_ttl=spec.marker_ttl_s,
    )
