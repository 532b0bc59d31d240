"""The linearizability checker: hand-made histories, classic violations, real executions."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.kit.linearizability import Operation, OperationKind, check


def get(
    client: int, call: float, ret: float | None, output: str | None, key: str = "k"
) -> Operation:
    return Operation(client, call, ret, "get", key, output=output)


def put(client: int, call: float, ret: float | None, value: str, key: str = "k") -> Operation:
    return Operation(client, call, ret, "put", key, value=value)


def delete(client: int, call: float, ret: float | None, key: str = "k") -> Operation:
    return Operation(client, call, ret, "delete", key)


def cas(
    client: int,
    call: float,
    ret: float | None,
    expected: str | None,
    value: str,
    ok: bool | None,
    key: str = "k",
) -> Operation:
    return Operation(client, call, ret, "cas", key, value=value, expected=expected, output=ok)


LINEARIZABLE = {
    "empty": [],
    "sequential": [put(1, 0, 1, "a"), get(2, 2, 3, "a"), delete(1, 4, 5), get(2, 6, 7, None)],
    "read of absent key": [get(1, 0, 1, None)],
    "overlapping read sees the old value": [put(1, 0, 10, "a"), get(2, 1, 2, None)],
    "overlapping read sees the new value": [put(1, 0, 10, "a"), get(2, 1, 2, "a")],
    "reads flip once during a write": [
        put(1, 0, 1, "a"),
        put(1, 2, 10, "b"),
        get(2, 3, 4, "a"),
        get(3, 5, 6, "b"),
        get(2, 7, 8, "b"),
    ],
    "concurrent writes ordered by later reads": [
        put(1, 0, 5, "a"),
        put(2, 0, 5, "b"),
        get(3, 6, 7, "a"),
        get(3, 8, 9, "a"),
    ],
    "cas success then failure": [
        put(1, 0, 1, "a"),
        cas(2, 2, 3, "a", "b", ok=True),
        cas(3, 4, 5, "a", "c", ok=False),
        get(1, 6, 7, "b"),
    ],
    "concurrent cas: exactly one wins": [
        put(1, 0, 1, "a"),
        cas(2, 2, 5, "a", "b", ok=True),
        cas(3, 2, 5, "a", "c", ok=False),
        get(1, 6, 7, "b"),
    ],
    "cas on absence creates": [cas(1, 0, 1, None, "a", ok=True), get(2, 2, 3, "a")],
    "cas on absence fails when present": [
        put(1, 0, 1, "a"),
        cas(2, 2, 3, None, "b", ok=False),
        get(2, 4, 5, "a"),
    ],
    "pending write observed": [put(1, 0, None, "a"), get(2, 5, 6, "a"), get(2, 7, 8, "a")],
    "pending write never observed": [put(1, 0, None, "a"), get(2, 5, 6, None)],
    "pending write observed late": [
        put(1, 0, None, "a"),
        get(2, 5, 6, None),
        get(2, 100, 101, "a"),
    ],
    "pending cas took effect": [
        put(1, 0, 1, "a"),
        cas(2, 2, None, "a", "b", ok=None),
        get(3, 10, 11, "b"),
    ],
    "pending get constrains nothing": [put(1, 0, 1, "a"), get(2, 2, None, None)],
    "touching intervals count as concurrent": [put(1, 0, 5, "a"), get(2, 5, 6, None)],
    "keys are independent": [
        put(1, 0, 1, "a", key="x"),
        put(1, 2, 3, "b", key="y"),
        get(2, 4, 5, "a", key="x"),
        get(2, 6, 7, "b", key="y"),
    ],
}

VIOLATIONS = {
    "stale read after a completed write": [put(1, 0, 1, "a"), put(1, 2, 3, "b"), get(2, 4, 5, "a")],
    "lost write": [put(1, 0, 1, "a"), get(2, 2, 3, None)],
    "lost write among concurrent ones": [
        put(1, 0, 2, "a"),
        put(2, 1, 3, "b"),
        get(3, 4, 5, "a"),
        get(3, 6, 7, "b"),
    ],
    "cas succeeded on an overwritten value": [
        put(1, 0, 1, "a"),
        put(1, 2, 3, "b"),
        cas(2, 4, 5, "a", "c", ok=True),
    ],
    "cas failed although its value was current": [
        put(1, 0, 1, "a"),
        cas(2, 2, 3, "a", "c", ok=False),
    ],
    "two concurrent cas both won": [
        put(1, 0, 1, "a"),
        cas(2, 2, 5, "a", "b", ok=True),
        cas(3, 2, 5, "a", "c", ok=True),
    ],
    "read of a value never written": [put(1, 0, 1, "a"), get(2, 2, 3, "z")],
    "read after delete": [put(1, 0, 1, "a"), delete(1, 2, 3), get(2, 4, 5, "a")],
    "reads flip back": [
        put(1, 0, 1, "a"),
        put(1, 2, 10, "b"),
        get(2, 3, 4, "b"),
        get(3, 5, 6, "a"),
    ],
    "pending write seen, then unseen": [
        put(1, 0, None, "a"),
        get(2, 5, 6, "a"),
        get(2, 7, 8, None),
    ],
}


@pytest.mark.parametrize("name", sorted(LINEARIZABLE))
def test_linearizable_histories_pass(name: str) -> None:
    result = check(LINEARIZABLE[name])
    assert result.ok, result.explain()


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_violations_are_found(name: str) -> None:
    history = VIOLATIONS[name]
    result = check(history)
    assert not result.ok
    assert result.key == "k"
    assert sorted(result.history, key=lambda op: op.call) == sorted(history, key=lambda op: op.call)
    assert "not linearizable" in result.explain()


def test_violations_are_found_whatever_the_input_order() -> None:
    rng = random.Random(7)
    for history in VIOLATIONS.values():
        shuffled = list(history)
        rng.shuffle(shuffled)
        assert not check(shuffled).ok


def test_the_failure_names_the_smallest_failing_key() -> None:
    big = [replace(op, key="big") for op in VIOLATIONS["reads flip back"]]
    small = [replace(op, key="small") for op in VIOLATIONS["lost write"]]
    fine = [replace(op, key="fine") for op in LINEARIZABLE["sequential"]]
    result = check(big + fine + small)
    assert not result.ok
    assert result.key == "small"
    assert set(result.history) == set(small)


def test_malformed_operations_are_refused() -> None:
    with pytest.raises(ValueError, match="returns before its call"):
        put(1, 5, 4, "a")
    with pytest.raises(ValueError, match="bool"):
        Operation(1, 0, 1, "cas", "k", value="a", expected="b", output="a")
    with pytest.raises(ValueError, match="needs a value"):
        Operation(1, 0, 1, "put", "k")


KINDS_BY_WEIGHT: list[OperationKind] = ["get", "get", "put", "cas", "delete"]


def real_execution(
    seed: int,
    clients: int,
    ops_per_client: int,
    keys: int,
    values: int | None = 4,
    pending_share: float = 0.05,
) -> list[Operation]:
    """Clients issue operations one after another; each takes effect at a random instant inside
    its interval, and the outputs come from applying them in that order to a real dictionary.
    A pending call either took effect inside its interval or not at all. ``values=None``: every
    write writes a value of its own, as tests that look for lost writes do."""
    rng = random.Random(seed)
    planned: list[tuple[float, int, float, Operation]] = []
    for client in range(clients):
        now = rng.uniform(0, 5)
        for _ in range(ops_per_client):
            call = now
            ret = call + rng.expovariate(1 / 3)
            point = rng.uniform(call, ret)
            kind = rng.choice(KINDS_BY_WEIGHT)
            key = f"k{rng.randrange(keys)}"
            written = f"v{len(planned) if values is None else rng.randrange(values)}"
            value = written if kind in ("put", "cas") else None
            expected = rng.choice([None, f"v{rng.randrange(values or len(planned) + 1)}"])
            expected = expected if kind == "cas" else None
            op = Operation(client, call, None, kind, key, value=value, expected=expected)
            planned.append((point, len(planned), ret, op))
            now = ret + rng.expovariate(1.0)
    planned.sort(key=lambda item: (item[0], item[1]))
    store: dict[str, str] = {}
    history: list[Operation] = []
    for _, _, ret, op in planned:
        pending = rng.random() < pending_share
        if pending and rng.random() < 0.5:
            history.append(op)
            continue  # never took effect
        current = store.get(op.key)
        output: str | bool | None = None
        if op.kind == "get":
            output = current
        elif op.kind == "put":
            assert op.value is not None
            store[op.key] = op.value
        elif op.kind == "delete":
            store.pop(op.key, None)
        else:
            output = current == op.expected
            if output:
                assert op.value is not None
                store[op.key] = op.value
        history.append(op if pending else replace(op, ret=ret, output=output))
    return history


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    clients=st.integers(1, 6),
    ops_per_client=st.integers(1, 25),
    keys=st.integers(1, 3),
)
def test_histories_of_real_executions_are_linearizable(
    seed: int, clients: int, ops_per_client: int, keys: int
) -> None:
    history = real_execution(seed, clients, ops_per_client, keys)
    result = check(history)
    assert result.ok, result.explain()


@pytest.mark.parametrize("seed", range(3))
def test_ten_clients_hundreds_of_operations_per_key(seed: int) -> None:
    history = real_execution(seed, clients=10, ops_per_client=120, keys=3, pending_share=0.02)
    result = check(history)
    assert result.ok, result.explain()


@pytest.mark.parametrize("seed", range(20))
def test_a_corrupted_read_in_a_real_execution_is_caught(seed: int) -> None:
    """Change one completed read, late in the history, to a value nobody ever wrote."""
    history = real_execution(seed, clients=5, ops_per_client=30, keys=2, pending_share=0.0)
    reads = [i for i, op in enumerate(history) if op.kind == "get" and op.ret is not None]
    victim = history[reads[-1]]
    history[reads[-1]] = replace(victim, output="never-written")
    result = check(history)
    assert not result.ok
    assert result.key == victim.key


def sequentially_valid(order: Sequence[Operation]) -> bool:
    state: str | None = None
    for op in order:
        if op.kind == "get":
            if op.output != state:
                return False
        elif op.kind == "put":
            state = op.value
        elif op.kind == "delete":
            state = None
        else:
            matches = state == op.expected
            if op.ret is not None and op.output != matches:
                return False
            state = op.value if matches else state
    return True


def respects_real_time(order: Sequence[Operation]) -> bool:
    return not any(
        later.ret is not None and later.ret < earlier.call
        for i, earlier in enumerate(order)
        for later in order[i + 1 :]
    )


def brute_force(history: Sequence[Operation]) -> bool:
    """Every subset of the pending operations, every order: the definition, spelled out."""
    completed = [op for op in history if op.ret is not None]
    pending = [op for op in history if op.ret is None]
    return any(
        respects_real_time(order) and sequentially_valid(order)
        for size in range(len(pending) + 1)
        for chosen in itertools.combinations(pending, size)
        for order in itertools.permutations(completed + list(chosen))
    )


def random_history(rng: random.Random, size: int) -> list[Operation]:
    """Small histories with arbitrary outputs: some linearizable, many not."""
    values = ["a", "b"]
    history: list[Operation] = []
    for client in range(size):
        call = rng.uniform(0, 10)
        ret = None if rng.random() < 0.25 else call + rng.uniform(0, 6)
        kind = rng.choice(KINDS_BY_WEIGHT[1:])
        output: str | bool | None = None
        if ret is not None and kind == "get":
            output = rng.choice([None, *values])
        if ret is not None and kind == "cas":
            output = rng.random() < 0.5
        history.append(
            Operation(
                client,
                call,
                ret,
                kind,
                "k",
                value=rng.choice(values) if kind in ("put", "cas") else None,
                expected=rng.choice([None, *values]) if kind == "cas" else None,
                output=output,
            )
        )
    return history


def test_the_search_agrees_with_the_definition_on_small_histories() -> None:
    """Every shortcut in the search (memo, subsumption, greedy reads, dropped pending writes) is
    checked against the brute-force definition on thousands of small random histories."""
    verdicts = {True: 0, False: 0}
    for seed in range(2500):
        rng = random.Random(seed)
        history = random_history(rng, rng.randint(1, 6))
        expected = brute_force(history)
        assert check(history).ok == expected, f"seed {seed}: {history}"
        verdicts[expected] += 1
    assert min(verdicts.values()) > 500  # both verdicts well represented


@pytest.mark.parametrize("seed", range(3))
def test_unique_values_with_many_pending_writes(seed: int) -> None:
    """Lost-write tests write a value per write; the pending ones must not defeat the search."""
    history = real_execution(seed, clients=10, ops_per_client=40, keys=1, values=None)
    reads = [i for i, op in enumerate(history) if op.kind == "get" and op.ret is not None]
    assert check(history).ok
    history[reads[-1]] = replace(history[reads[-1]], output="never-written")
    assert not check(history).ok
