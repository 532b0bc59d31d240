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
    durable log), ``entries`` and ``hard_state`` (one write, synced when ``must_sync``; an
    entry at or below the last durable index replaces the durable suffix from there), then send
    ``messages``, install ``snapshot`` into the state machine, apply ``committed`` in order,
    serve a read state once its index is applied, and call ``advance``. After a restart the
    application loads the recovered snapshot itself; committed entries after it come out of
    ``ready`` again.

    When ``send_before_sync`` is set, ``messages`` may go out while the batch is being
    persisted: they are a leader's appends and heartbeats, and a leader counts its own entries
    towards a commit only once ``advance`` reports them durable (Raft thesis, 10.2.1)."""

    hard_state: HardState | None
    entries: list[Entry]
    snapshot: Snapshot | None
    messages: list[Message]
    committed: list[Entry]
    read_states: list[ReadState]
    must_sync: bool = True
    """Whether the write must be synced before anything else: entries, a snapshot, or a new
    term or vote. A hard state that only moves the commit index may be written unsynced: a
    commit index lost in a crash is learnt again from the leader."""
    send_before_sync: bool = False
