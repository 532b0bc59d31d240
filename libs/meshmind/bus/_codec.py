"""msgpack on the wire: encode a message, decode and validate bytes into one."""

from __future__ import annotations

from typing import TypeVar

import msgpack
from pydantic import ValidationError

from meshmind.bus._errors import BadRequest, PayloadTooLarge, UnsupportedVersion
from meshmind.bus._message import Message

M = TypeVar("M", bound=Message)


_PACKER = msgpack.Packer(use_bin_type=True)


def encode(message: Message) -> bytes:
    """The msgpack bytes of ``message``."""
    packed: bytes = _PACKER.pack(message.__pydantic_serializer__.to_python(message))
    return packed


def decode(data: bytes, model: type[M], *, max_size: int) -> M:
    """Decode ``data`` as ``model``, raising a :class:`ServiceError` subclass on bad input."""
    if len(data) > max_size:
        raise PayloadTooLarge(len(data), max_size)
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as error:  # msgpack raises several unrelated types on garbage
        raise BadRequest(f"{model.__name__}: body is not valid msgpack ({error})") from None
    if not isinstance(obj, dict):
        raise BadRequest(f"{model.__name__}: body must be a msgpack map, got {type(obj).__name__}")
    version = obj.get("v")
    if version != model.schema_version:
        if version is None:
            raise BadRequest(f"{model.__name__}: missing schema version field 'v'")
        raise UnsupportedVersion(version, model.schema_version, model.__name__)
    try:
        return model.__pydantic_validator__.validate_python(obj)  # type: ignore[no-any-return]
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in error.errors()
        )
        raise BadRequest(f"{model.__name__}: {problems}") from None
