"""Hypothesis strategies for payloads: valid ones built from a model's JSON Schema, and hostile
ones (malformed msgpack, wrong types, huge, deep, wrong versions, bad identities) made from them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import msgpack
from hypothesis import strategies as st

from meshmind.bus import Message
from meshmind.bus._codec import MAX_DEPTH, MAX_ITEMS

Json = dict[str, Any]

NODE_ID = re.compile(r"^[A-Za-z0-9_-]+$")
BAD_NODE_IDS = ["", "n1.n2", "*", ">", "n 1", "n1\r\nX: y", "é", "n1.>"]
"""Node ids that no subject may carry: the contract refuses each (400)."""

_SCALARS = {"string", "integer", "number", "boolean", "null"}


@dataclass(frozen=True)
class Hostile:
    """A hostile payload, what kind it is, and the code it must be refused with (``None``:
    any refusal the codec gives, which the caller computes)."""

    kind: str
    data: bytes
    code: int | None


def pack(value: object) -> bytes:
    """``value`` as msgpack, as any client would send it."""
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _resolve(schema: Json, defs: Json) -> Json:
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _accepted_types(schema: Json, defs: Json) -> set[str]:
    """The JSON types a field's schema accepts (empty: any)."""
    schema = _resolve(schema, defs)
    if "anyOf" in schema:
        return set().union(*(_accepted_types(s, defs) for s in schema["anyOf"]))
    if "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else schema["enum"]
        return {_json_type(v) for v in values}
    kind = schema.get("type")
    if kind is None:
        return {"object"} if "properties" in schema else set()
    return set(kind) if isinstance(kind, list) else {kind}


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _string(schema: Json) -> st.SearchStrategy[Any]:
    if schema.get("format") == "binary":
        return st.binary(max_size=64)
    low = schema.get("minLength", 0)
    high = schema.get("maxLength", 1 << 30)
    pattern = schema.get("pattern")
    if pattern is None:
        return st.text(min_size=low, max_size=max(low, min(high, 24)))
    return st.from_regex(pattern, fullmatch=True).filter(lambda s: low <= len(s) <= high)


def _number(schema: Json, integer: bool) -> st.SearchStrategy[Any]:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if integer:
        low = -(2**63) if low is None else int(low) + ("exclusiveMinimum" in schema)
        high = 2**64 - 1 if high is None else int(high) - ("exclusiveMaximum" in schema)
        return st.integers(min_value=low, max_value=high)  # what msgpack can carry
    return st.floats(
        min_value=low,
        max_value=high,
        exclude_min="exclusiveMinimum" in schema,
        exclude_max="exclusiveMaximum" in schema,
        allow_nan=False,
        allow_infinity=False,
    )


def valid_value(schema: Json, defs: Json) -> st.SearchStrategy[Any]:
    """Values a JSON Schema (as pydantic writes them) accepts."""
    schema = _resolve(schema, defs)
    if "anyOf" in schema:
        return st.one_of([valid_value(s, defs) for s in schema["anyOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        return _string(schema)
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(
            valid_value(schema.get("items", {}), defs),
            min_size=schema.get("minItems", 0),
            max_size=min(schema.get("maxItems", 3), 3),
        )
    if "properties" in schema:
        return _object(schema, defs)
    if kind == "object":
        return st.dictionaries(
            st.from_regex(r"[a-z][a-z0-9_-]{0,7}", fullmatch=True),
            valid_value(schema.get("additionalProperties", {}), defs),
            max_size=min(schema.get("maxProperties", 3), 3),
        )
    return st.integers(-(2**63), 2**64 - 1)


def _object(schema: Json, defs: Json) -> st.SearchStrategy[Json]:
    required = set(schema.get("required", ()))
    fields = {
        name: valid_value(field, defs)
        for name, field in schema["properties"].items()
        if name != "v"
    }
    return st.fixed_dictionaries(
        {k: s for k, s in fields.items() if k in required},
        optional={k: s for k, s in fields.items() if k not in required},
    )


@functools.cache
def _schema(model: type[Message]) -> tuple[Json, Json]:
    schema = model.model_json_schema()
    return schema, schema.get("$defs", {})


def valid_body(model: type[Message]) -> st.SearchStrategy[Json]:
    """Bodies of ``model`` as msgpack maps, ``v`` included; a few may still fail the model's
    own cross-field checks, so callers validate before relying on them."""
    schema, defs = _schema(model)
    return _object(schema, defs).map(lambda body: {"v": model.schema_version, **body})


def valid_message(model: type[Message]) -> st.SearchStrategy[Message]:
    """Valid instances of ``model``."""

    def build(body: Json) -> Message | None:
        try:
            return model.model_validate(body)
        except ValueError:
            return None

    return valid_body(model).map(build).filter(lambda m: m is not None)  # type: ignore[return-value]


def _field_names(model: type[Message]) -> list[str]:
    return [name for name in model.model_fields if name != "v"]


def _node_fields(model: type[Message]) -> list[str]:
    schema, _ = _schema(model)
    return [
        name
        for name, field in schema["properties"].items()
        if field.get("pattern") == NODE_ID.pattern
    ]


_ANY_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=8),
)
_CONTAINER = st.one_of(
    st.lists(_ANY_SCALAR, max_size=3), st.dictionaries(st.text(max_size=4), _ANY_SCALAR, max_size=3)
)


def _wrong_value(accepted: set[str]) -> st.SearchStrategy[Any]:
    """A value no field accepting ``accepted`` takes, even with pydantic's lax coercions
    (numbers from strings, integers from booleans, strings from bytes)."""
    if accepted <= _SCALARS:
        return _CONTAINER
    wrong: list[st.SearchStrategy[Any]] = []
    if not accepted & {"string", "integer", "number"}:
        wrong.append(st.text(alphabet="xyz", min_size=1, max_size=8))
    if not accepted & {"integer", "number", "boolean"}:
        wrong += [st.integers(-(2**63), 2**64 - 1), st.booleans()]
    if "null" not in accepted:
        wrong.append(st.none())
    return st.one_of(wrong)


def _nested(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"


def hostile(model: type[Message], max_size: int) -> st.SearchStrategy[Hostile]:
    """Every kind of hostile payload for ``model`` on an endpoint or subject that accepts
    at most ``max_size`` bytes."""
    body = valid_body(model)
    fields = _field_names(model)
    schema, defs = _schema(model)
    kinds: list[st.SearchStrategy[Hostile]] = [
        st.binary(max_size=64).map(lambda b: Hostile("random bytes", b, None)),
        body.map(pack).flatmap(
            lambda b: st.integers(0, max(0, len(b) - 1)).map(
                lambda n: Hostile("truncated", b[:n], 400)
            )
        ),
        body.map(lambda b: Hostile("trailing bytes", pack(b) + b"\xc0", 400)),
        _CONTAINER.filter(lambda c: isinstance(c, list)).map(
            lambda c: Hostile("not a map", pack(c), 400)
        ),
        body.map(lambda b: Hostile("no version", pack({k: b[k] for k in b if k != "v"}), 400)),
        st.tuples(body, st.integers(-(2**63), 2**64 - 1).filter(lambda v: v != 1)).map(
            lambda t: Hostile("unknown version", pack({**t[0], "v": t[1]}), 426)
        ),
        st.tuples(body, st.one_of(st.text(max_size=4), st.floats(), st.booleans(), _CONTAINER))
        .filter(lambda t: type(t[1]) is not float or t[1] != 1)
        .map(lambda t: Hostile("version of the wrong type", pack({**t[0], "v": t[1]}), 400)),
        st.tuples(
            body, st.text(min_size=1, max_size=12).filter(lambda k: k not in {*fields, "v"})
        ).map(lambda t: Hostile("unknown field", pack({**t[0], t[1]: 1}), 400)),
        st.tuples(body, st.integers(MAX_DEPTH, 5_000)).map(
            lambda t: Hostile("nested too deeply", _deep_body(t[0], t[1]), 400)
        ),
        st.integers(-64, 64).map(
            lambda delta: Hostile(
                "huge string", _sized(max_size + delta), 413 if delta > 0 else None
            )
        ),
        st.integers(1, 64).map(
            lambda extra: Hostile(
                "array over the element limit", _long_array(MAX_ITEMS + extra), 413
            )
        ),
    ]
    if fields:
        kinds.append(
            st.tuples(body, st.sampled_from(fields)).flatmap(
                lambda t: _wrong_value(_accepted_types(schema["properties"][t[1]], defs)).map(
                    lambda wrong: Hostile("wrong type", pack({**t[0], t[1]: wrong}), 400)
                )
            )
        )
    node_fields = _node_fields(model)
    if node_fields:
        kinds.append(
            st.tuples(body, st.sampled_from(node_fields), st.sampled_from(BAD_NODE_IDS)).map(
                lambda t: Hostile("malformed identity", pack({**t[0], t[1]: t[2]}), 400)
            )
        )
    return st.one_of(kinds).map(
        lambda h: Hostile(h.kind, h.data, 413) if len(h.data) > max_size else h
    )


def _deep_body(body: Json, depth: int) -> bytes:
    """``body`` with one more field holding ``depth`` nested arrays: deeper than any model."""
    packed = pack({**body, "deep": None})
    return packed[:-1] + _nested(depth)


def _sized(size: int) -> bytes:
    """A map of ``size`` bytes (a few more when ``size`` is tiny) whose one string fills it."""
    length = max(0, size - len(pack({"v": 1, "filler": ""})))
    for _ in range(3):  # the string's header grows with its length
        data = pack({"v": 1, "filler": "x" * length})
        length = max(0, length - (len(data) - size))
    return data


def _long_array(count: int) -> bytes:
    """A map whose one field is an array of ``count`` nils."""
    return b"\x82\xa1v\x01\xa4many\xdd" + count.to_bytes(4, "big") + b"\xc0" * count
