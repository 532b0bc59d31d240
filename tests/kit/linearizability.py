"""A linearizability checker for key-value histories: Wing-Gong search with Lowe's memoisation."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

OperationKind = Literal["get", "put", "cas", "delete"]


@dataclass(frozen=True, slots=True)
class Operation:
    """One client call on one key, as the client saw it.

    ``ret=None``: the call never returned, so it may have taken effect at any point after its call
    or never. ``output``: what a get returned (None = absent), or whether a cas succeeded; unused
    for put and delete. A cas with ``expected=None`` requires the key to be absent.
    """

    client: int
    call: float
    ret: float | None
    kind: OperationKind
    key: str
    value: str | None = None
    expected: str | None = None
    output: str | bool | None = None

    def __post_init__(self) -> None:
        if self.ret is not None and self.ret < self.call:
            raise ValueError(f"operation returns before its call: {self}")
        if self.kind in ("put", "cas") and self.value is None:
            raise ValueError(f"a {self.kind} needs a value: {self}")
        if self.kind == "cas" and self.ret is not None and not isinstance(self.output, bool):
            raise ValueError(f"a completed cas reports success as a bool: {self}")
        if self.kind == "get" and isinstance(self.output, bool):
            raise ValueError(f"a get returns a value or None: {self}")

    def describe(self) -> str:
        """One line: who called what, when, and what came back."""
        ret = "pending" if self.ret is None else f"{self.ret:g}"
        args = {
            "get": "",
            "put": f"{self.value!r}",
            "delete": "",
            "cas": f"{self.expected!r} -> {self.value!r}",
        }[self.kind]
        shown = "" if self.kind in ("put", "delete") or self.ret is None else f" = {self.output!r}"
        return f"client {self.client} [{self.call:g}, {ret}] {self.kind}({args}){shown}"


@dataclass(frozen=True, slots=True)
class LinearizabilityResult:
    """Whether a history is linearizable; if not, the smallest key sub-history that is not."""

    ok: bool
    key: str | None = None
    history: tuple[Operation, ...] = ()

    def explain(self) -> str:
        """A readable account, for assertion messages."""
        if self.ok:
            return "linearizable"
        lines = [f"key {self.key!r} is not linearizable ({len(self.history)} operations):"]
        lines += [f"  {op.describe()}" for op in sorted(self.history, key=lambda o: o.call)]
        return "\n".join(lines)


def check(history: Sequence[Operation]) -> LinearizabilityResult:
    """Check a history, one key at a time (linearizability is compositional over keys)."""
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for operation in history:
        by_key[operation.key].append(operation)
    failures = [(len(ops), key, ops) for key, ops in by_key.items() if not _linearizable(ops)]
    if not failures:
        return LinearizabilityResult(ok=True)
    _, key, ops = min(failures, key=lambda failure: (failure[0], failure[1]))
    return LinearizabilityResult(ok=False, key=key, history=tuple(ops))


def _written(op: Operation) -> str | None:
    """The value a write leaves behind (None for a delete)."""
    return None if op.kind == "delete" else op.value


def _without_unneeded_pending(ops: Sequence[Operation]) -> list[Operation]:
    """Drop pending operations that no linearization needs (they may never have taken effect).

    A pending get constrains nothing. A pending write matters only if a later operation can tell
    its value apart: a completed get that returned it, or a cas that expected it. A failed cas
    can tell any value apart from the one it expected, so with one in the history writes stay.
    """
    if any(op.kind == "cas" and op.ret is not None and op.output is False for op in ops):
        observed = None
    else:
        observed = {op.output for op in ops if op.kind == "get" and op.ret is not None}
        observed |= {op.expected for op in ops if op.kind == "cas"}
    return [
        op
        for op in ops
        if op.ret is not None
        or (op.kind != "get" and (observed is None or _written(op) in observed))
    ]


def _with_unseen_values_merged(ops: Sequence[Operation]) -> list[Operation]:
    """Write one token for every value no operation can tell apart from another.

    Only a get's output and a cas's expected value are compared with the state, so values that
    are neither are interchangeable; merging them lets the memo merge states (unique values, as
    lost-write tests write, would otherwise each be a state of their own).
    """
    observed = {op.output for op in ops if op.kind == "get"} | {op.expected for op in ops}
    unseen = "<unseen>"
    while unseen in observed:
        unseen = f"<{unseen}>"
    return [
        replace(op, value=unseen) if op.kind in ("put", "cas") and op.value not in observed else op
        for op in ops
    ]


def _step(state: str | None, op: Operation) -> tuple[bool, str | None]:
    """Apply ``op`` to a register holding ``state``: whether its output fits, and the new state."""
    if op.kind == "get":
        return op.output == state, state
    if op.kind == "put":
        return True, op.value
    if op.kind == "delete":
        return True, None
    matches = state == op.expected
    if op.ret is not None and op.output != matches:
        return False, state
    return True, op.value if matches else state


class _Event:
    """A call or return in the doubly linked time line that the search lifts operations out of."""

    __slots__ = ("bit", "is_call", "match", "next", "op", "prev")

    def __init__(self, op: Operation, bit: int, is_call: bool) -> None:
        self.op = op
        self.bit = bit
        self.is_call = is_call
        self.match: _Event | None = None
        self.prev: _Event | None = None
        self.next: _Event | None = None


def _time_line(ops: Sequence[Operation]) -> _Event:
    """Events by time, calls before returns at equal times, behind a head sentinel.

    A pending operation has no return event: it never forces anything to happen before it.
    """
    events: list[tuple[float, int, _Event]] = []
    for op_id, op in enumerate(ops):
        call = _Event(op, 1 << op_id, is_call=True)
        events.append((op.call, 0, call))
        if op.ret is not None:
            call.match = _Event(op, 1 << op_id, is_call=False)
            events.append((op.ret, 1, call.match))
    events.sort(key=lambda item: (item[0], item[1]))
    head = _Event(ops[0], 0, is_call=False)
    last = head
    for _, _, event in events:
        last.next = event
        event.prev = last
        last = event
    return head


def _unlink(event: _Event) -> None:
    assert event.prev is not None
    event.prev.next = event.next
    if event.next is not None:
        event.next.prev = event.prev


def _relink(event: _Event) -> None:
    assert event.prev is not None
    event.prev.next = event
    if event.next is not None:
        event.next.prev = event


def _lift(call: _Event) -> None:
    """Take an operation's call and return out of the time line."""
    _unlink(call)
    if call.match is not None:
        _unlink(call.match)


def _unlift(call: _Event) -> None:
    """Put a lifted operation back where it was."""
    if call.match is not None:
        _relink(call.match)
    _relink(call)


def _changes(state: str | None, op: Operation) -> bool:
    """Whether ``op`` (known to fit) would change the register's state."""
    return _step(state, op)[1] != state


def _reads_only(op: Operation) -> bool:
    """Whether a completed operation leaves the state as it found it, whatever the state."""
    return op.kind == "get" or (op.kind == "cas" and op.output is False)


def _candidates(head: _Event, state: str | None) -> list[_Event]:
    """Operations worth linearizing next: those called before the first remaining return.

    A completed read (a get, a failed cas) that fits is the only candidate: taking it first loses
    no linearization, since nothing can have to precede it and it changes no state wherever it
    goes. A pending operation that would change nothing now is not needed now. Completed
    operations come before pending ones, which are optional.
    """
    completed: list[_Event] = []
    pending: dict[tuple[str, str | None, str | None], _Event] = {}
    event = head.next
    while event is not None and event.is_call:
        op = event.op
        fits, _ = _step(state, op)
        if op.ret is None:
            # Pending operations with one effect are interchangeable: the earliest stands for all.
            if _changes(state, op):
                pending.setdefault((op.kind, op.value, op.expected), event)
        elif fits and _reads_only(op):
            return [event]
        elif fits:
            completed.append(event)
        event = event.next
    return completed + list(pending.values())


class _Explored:
    """Configurations already explored: Lowe's memo of (linearized set, state), with subsumption.

    A pending operation is optional and stays available forever once called, so a configuration
    with the same completed operations and state but more pending ones already linearized has
    no continuation the explored one lacked: it is skipped.
    """

    def __init__(self, pending_mask: int) -> None:
        self._pending_mask = pending_mask
        self._seen: dict[tuple[int, str | None], list[int]] = {}

    def first_visit(self, linearized: int, state: str | None) -> bool:
        """Record a configuration; False when an explored one subsumes it."""
        pending = linearized & self._pending_mask
        known = self._seen.setdefault((linearized & ~self._pending_mask, state), [])
        if any(earlier & ~pending == 0 for earlier in known):
            return False
        known[:] = [earlier for earlier in known if pending & ~earlier != 0]
        known.append(pending)
        return True


@dataclass(slots=True)
class _Choice:
    """One step of the search: the operation linearized, and what to try instead on return."""

    call: _Event
    state_before: str | None
    candidates: list[_Event]
    next_candidate: int


def _linearizable(ops: Sequence[Operation]) -> bool:
    """Wing-Gong depth-first search over linearization orders, with memoisation."""
    ops = _with_unseen_values_merged(_without_unneeded_pending(ops))
    completed = sum(1 for op in ops if op.ret is not None)
    if completed == 0:
        return True
    pending_mask = sum(1 << op_id for op_id, op in enumerate(ops) if op.ret is None)
    head = _time_line(ops)
    explored = _Explored(pending_mask)
    state: str | None = None
    linearized = 0
    completed_linearized = 0
    path: list[_Choice] = []
    candidates = _candidates(head, state)
    next_candidate = 0
    while completed_linearized < completed:
        while next_candidate < len(candidates):
            call = candidates[next_candidate]
            next_candidate += 1
            fits, next_state = _step(state, call.op)
            if fits and explored.first_visit(linearized | call.bit, next_state):
                path.append(_Choice(call, state, candidates, next_candidate))
                _lift(call)
                state, linearized = next_state, linearized | call.bit
                completed_linearized += call.op.ret is not None
                candidates, next_candidate = _candidates(head, state), 0
                break
        else:
            # Nothing can take effect before the next return: undo the last choice.
            if not path:
                return False
            choice = path.pop()
            _unlift(choice.call)
            state, linearized = choice.state_before, linearized & ~choice.call.bit
            completed_linearized -= choice.call.op.ret is not None
            candidates, next_candidate = choice.candidates, choice.next_candidate
    return True
