"""Properties of the codec over every payload model of the contract: any bytes decode to a valid
message or a clear 400/413/426, never another exception; valid messages round-trip; hostile
payloads get the code their kind calls for; claims are believed only from their own subject."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshmind.bus import EventSpec, Message, ServiceError, decode, encode
from meshmind.bus.protocol import CONTRACT
from tests.kit.hostile import hostile, pack, valid_body, valid_message

LIMIT = 256 * 1024
REFUSALS = {400, 413, 426}

MODELS = sorted(
    {e.model for e in CONTRACT.events}
    | {e.request for e in CONTRACT.endpoints}
    | {e.reply for e in CONTRACT.endpoints},
    key=lambda m: m.__name__,
)
CLAIMING = [e for e in CONTRACT.events if e.claim is not None]
PROPERTY = settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))


def outcome(data: bytes, model: type[Message], max_size: int = LIMIT) -> Message | ServiceError:
    """What decoding gives: a message, or the service error; any other exception escapes."""
    try:
        return decode(data, model, max_size=max_size)
    except ServiceError as error:
        return error


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@PROPERTY
@given(data=st.binary(max_size=256))
def test_any_bytes_decode_or_get_a_clear_refusal(model: type[Message], data: bytes) -> None:
    result = outcome(data, model)

    if isinstance(result, ServiceError):
        assert result.code in REFUSALS
        assert result.description.startswith(model.__name__) or result.code == 413
    else:
        assert isinstance(result, model)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@PROPERTY
@given(data=st.data())
def test_any_msgpack_value_decodes_or_gets_a_clear_refusal(
    model: type[Message], data: st.DataObject
) -> None:
    values = st.recursive(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**63), 2**64 - 1),
            st.floats(),
            st.text(max_size=16),
            st.binary(max_size=16),
        ),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=20,
    )
    body = data.draw(st.one_of(values, valid_body(model).flatmap(lambda b: _mutated(b, values))))

    result = outcome(pack(body), model)

    if isinstance(result, ServiceError):
        assert result.code in REFUSALS
    else:
        assert isinstance(result, model)


def _mutated(
    body: dict[str, object], values: st.SearchStrategy[object]
) -> st.SearchStrategy[dict[str, object]]:
    keys = st.sampled_from(sorted(body)) if body else st.just("v")
    return st.tuples(keys, values).map(lambda kv: {**body, kv[0]: kv[1]})


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@PROPERTY
@given(data=st.data())
def test_valid_messages_round_trip(model: type[Message], data: st.DataObject) -> None:
    message = data.draw(valid_message(model))

    assert decode(encode(message), model, max_size=LIMIT) == message


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@PROPERTY
@given(data=st.data())
def test_hostile_payloads_get_the_code_their_kind_calls_for(
    model: type[Message], data: st.DataObject
) -> None:
    attack = data.draw(hostile(model, LIMIT))

    result = outcome(attack.data, model)

    assert isinstance(result, ServiceError), f"{attack.kind} was accepted"
    assert result.code == attack.code or (attack.code is None and result.code in REFUSALS), (
        f"{attack.kind}: {result}"
    )


@pytest.mark.parametrize("spec", CLAIMING, ids=lambda s: s.subject)
@PROPERTY
@given(data=st.data())
def test_a_claim_is_believed_only_on_the_subject_of_the_host_it_names(
    spec: EventSpec[Message], data: st.DataObject
) -> None:
    message = data.draw(valid_message(spec.model))
    claimed = _claimed(message, spec.claim or "")
    other = data.draw(st.sampled_from(["n1", "n2", "n3", "x_9"]).filter(lambda n: n != claimed))
    params = dict.fromkeys(spec.parameters, other)

    assert spec.believes(spec.render(**{**params, spec.parameters[0]: claimed}), message)
    assert not spec.believes(spec.render(**params), message)


def _claimed(message: Message, path: str) -> str:
    value: object = message
    for name in path.split("."):
        value = getattr(value, name)
    assert isinstance(value, str)
    return value
