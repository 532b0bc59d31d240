"""What a node hands its application to persist, send and apply."""

from __future__ import annotations

from dataclasses import dataclass

from meshmind.raft._messages import Message
from meshmind.raft._types import Entry, HardState, Snapshot


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read request may be served once the state machine has applied ``index``."""

    request_id: int
    index: int


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work, done in this order: persist ``snapshot`` (it replaces the whole
    durable log), ``entries`` and ``hard_state`` (one sync; an entry at or below the last
    durable index replaces the durable suffix from there), then send ``messages``, install
    ``snapshot`` into the state machine, apply ``committed`` in order, serve a read state once
    its index is applied, and call ``advance``. After a restart the application loads the
    recovered snapshot itself; committed entries after it come out of ``ready`` again."""

    hard_state: HardState | None
    entries: list[Entry]
    snapshot: Snapshot | None
    messages: list[Message]
    committed: list[Entry]
    read_states: list[ReadState]

    @property
    def must_sync(self) -> bool:
        """Whether anything needs persisting before the messages go out."""
        return bool(self.hard_state or self.entries or self.snapshot)
