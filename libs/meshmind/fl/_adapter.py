"""Adapters on the wire: trainable parameters as safetensors bytes with a SHA-256 digest."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from meshmind.bus.protocol import INLINE_ADAPTER_BYTES
from meshmind.fl._params import Params


@dataclass(frozen=True)
class AdapterBlob:
    """Serialised parameters and the hex SHA-256 of exactly those bytes."""

    data: bytes
    sha256: str


class AdapterCorrupt(ValueError):
    """Bytes that do not match their digest or are not a safetensors file of tensors."""


def encode_adapter(params: Mapping[str, torch.Tensor]) -> AdapterBlob:
    """Serialise ``params`` (safetensors: no pickle, so loading runs no code)."""
    data = save({name: tensor.detach().contiguous() for name, tensor in params.items()})
    return AdapterBlob(data=data, sha256=hashlib.sha256(data).hexdigest())


def decode_adapter(data: bytes, sha256: str) -> Params:
    """The parameters in ``data``, after checking the bytes against ``sha256``."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256.lower():
        raise AdapterCorrupt(f"digest mismatch: got {actual}, expected {sha256}")
    try:
        return dict(load(data))
    except SafetensorError as error:
        raise AdapterCorrupt(f"not a safetensors adapter: {error}") from error


def inline_adapter(blob: AdapterBlob) -> bytes | None:
    """The adapter's bytes if they are small enough to travel inside a message (a round's
    announcement, an update's report)."""
    return blob.data if len(blob.data) <= INLINE_ADAPTER_BYTES else None
