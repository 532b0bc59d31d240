"""msgpack on the wire: encode a message, decode and validate bytes into one, within limits."""

from __future__ import annotations

import functools
import re
from typing import Any, TypeVar

import msgpack
from pydantic import ValidationError

from meshmind.bus._errors import BadRequest, PayloadTooLarge, ServiceError, UnsupportedVersion
from meshmind.bus._message import Message

M = TypeVar("M", bound=Message)

MAX_DEPTH = 32
"""The deepest nesting of arrays and maps a payload may have (the message itself is level 1)."""
MAX_ITEMS = 65_536
"""The most elements one array, or entries one map, may have."""
MAX_DETAIL_CHARS = 1_000
"""The longest error description the codec writes: it travels in a reply header."""

_PACKER = msgpack.Packer(use_bin_type=True)
_LIMIT_ERROR = re.compile(r"^(\d+) exceeds max_(str|bin|array|map|ext)_len\((\d+)\)$")
_LIMITED = {
    "str": "a string of {} bytes",
    "bin": "a binary of {} bytes",
    "array": "an array of {} elements",
    "map": "a map of {} entries",
}
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")
_CONTAINERS = (dict, list)
_TOO_DEEP = f"nested too deeply (more than {MAX_DEPTH} levels)"


def encode(message: Message) -> bytes:
    """The msgpack bytes of ``message``."""
    packed: bytes = _PACKER.pack(message.__pydantic_serializer__.to_python(message))
    return packed


def decode(data: bytes, model: type[M], *, max_size: int) -> M:
    """Decode ``data`` as ``model``, raising a :class:`ServiceError` on bad input: 413 when the
    body or one of its strings or containers is over its limit, 426 for a schema version this
    process does not speak, 400 for everything else."""
    if len(data) > max_size:
        raise PayloadTooLarge(len(data), max_size)
    obj = _unpack(data, model.__name__, max_size)
    if not isinstance(obj, dict):
        raise BadRequest(f"{model.__name__}: body must be a msgpack map, got {type(obj).__name__}")
    _check_version(obj, model)
    if _takes_any(model):
        _check_depth(obj, model.__name__)
    try:
        return model.__pydantic_validator__.validate_python(obj)  # type: ignore[no-any-return]
    except ValidationError as error:
        _check_depth(obj, model.__name__)
        problems = "; ".join(
            f"{'.'.join(_short(p) for p in e['loc']) or '<root>'}: {e['msg']}"
            for e in error.errors(include_url=False, include_input=False, include_context=False)
        )
        raise BadRequest(_short(f"{model.__name__}: {problems}", MAX_DETAIL_CHARS)) from None


def _unpack(data: bytes, name: str, max_size: int) -> Any:
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=max_size,
            max_bin_len=max_size,
            max_array_len=MAX_ITEMS,
            max_map_len=MAX_ITEMS,
            max_ext_len=0,
        )
    except msgpack.StackError:
        problem = _TOO_DEEP
    except msgpack.ExtraData:
        problem = "trailing bytes after the message"
    except UnicodeDecodeError:
        problem = "a string is not valid UTF-8"
    except ValueError as error:
        limit = _LIMIT_ERROR.match(str(error))
        if limit is not None:
            size, kind, most = limit.groups()
            if kind == "ext":
                problem = "extension types are not accepted"
            else:
                what = _LIMITED[kind].format(size)
                raise ServiceError(413, f"{name}: {what} exceeds the limit of {most}") from None
        elif "strict_map_key" in str(error):
            problem = "map keys must be strings"
        elif "incomplete input" in str(error) or not data:
            problem = "truncated"
        else:
            problem = _short(str(error) or type(error).__name__, 200)
    except Exception as error:  # msgpack raises unrelated types (TypeError, ...) on garbage
        problem = _short(f"{type(error).__name__}: {error}", 200)
    raise BadRequest(f"{name}: body is not valid msgpack: {problem}")


@functools.cache
def _takes_any(model: type[Message]) -> bool:
    """Whether ``model`` has a field that takes data of any shape (or refers to other schemas,
    which may be recursive). A model without one cannot validate data nested deeper than its
    own fields, so its valid payloads need no depth check."""
    pending: list[object] = [model.__pydantic_core_schema__]
    while pending:
        schema = pending.pop()
        if isinstance(schema, dict):
            if schema.get("type") in ("any", "definition-ref", "json"):
                return True
            pending.extend(schema.values())
        elif isinstance(schema, list | tuple):
            pending.extend(schema)
    return False


def _check_depth(obj: dict[Any, Any], name: str) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH`, level by level, without recursion."""
    level: list[Any] = [obj]
    depth = 1
    while level:
        if depth > MAX_DEPTH:
            raise BadRequest(f"{name}: body is not valid msgpack: {_TOO_DEEP}")
        below: list[Any] = []
        for container in level:
            items = container.values() if type(container) is dict else container
            below += [item for item in items if type(item) in _CONTAINERS]
        level = below
        depth += 1


def _check_version(obj: dict[Any, Any], model: type[Message]) -> None:
    version = obj.get("v")
    if type(version) is int and version == model.schema_version:
        return
    if version is None:
        raise BadRequest(f"{model.__name__}: missing schema version field 'v'")
    if type(version) is not int:
        raise BadRequest(
            f"{model.__name__}: schema version 'v' must be an integer, got {type(version).__name__}"
        )
    raise UnsupportedVersion(version, model.schema_version, model.__name__)


def _short(value: object, limit: int = 80) -> str:
    """``value`` as printable ASCII (header-safe) of at most ``limit`` characters."""
    text = _NOT_PRINTABLE_ASCII.sub("?", str(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."
