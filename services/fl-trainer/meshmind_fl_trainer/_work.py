"""The trainer's bench: the tasks' models on this host, and one round's work on them (torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from meshmind.bus.protocol import FlRoundAnnouncement
from meshmind.federation import HostData
from meshmind.fl import (
    AdapterCorrupt,
    TaskSession,
    UpdateRejected,
    decode_adapter,
    encode_adapter,
    inline_adapter,
    validate_update,
)
from meshmind_fl_trainer._faults import corrupt


@dataclass(frozen=True)
class Trained:
    """An update ready to upload, and what training reports about it."""

    data: bytes
    sha256: str
    examples: int
    loss: float
    metrics: dict[str, float]
    carried: bytes | None
    """``data`` again if it is small enough to travel in the report (:func:`inline_adapter`)."""


class Withheld(Exception):
    """Work that produced nothing to send: the adapter was bad, or so was the update."""


@dataclass
class Workbench:
    """Models built once per task and seed; trains rounds on the host's own data."""

    data: HostData
    fault: Literal["none", "nan", "scale"] = "none"
    sessions: dict[tuple[str, int, float | None], TaskSession] = field(default_factory=dict)

    def session(self, task: str, seed: int, label_skew: float | None = None) -> TaskSession:
        key = (task, seed, label_skew)
        if key not in self.sessions:
            self.sessions[key] = TaskSession(task, seed, self.data, label_skew)
        return self.sessions[key]

    def train(self, work: FlRoundAnnouncement, adapter: bytes) -> Trained:
        """Train the round's global adapter; its own update is checked before it may leave
        (unless this host is set to be faulty). Raises :class:`Withheld` with the reason."""
        try:
            global_params = decode_adapter(adapter, work.sha256)
        except AdapterCorrupt as error:
            raise Withheld(f"global adapter: {error}") from None
        session = self.session(work.task, work.seed, work.label_skew)
        params, result = session.train(
            global_params, epochs=work.epochs, lr=work.lr, proximal_mu=work.proximal_mu
        )
        if self.fault != "none":
            params = corrupt(params, global_params, self.fault)
        else:
            try:
                validate_update(global_params, params, work.max_update_norm)
            except UpdateRejected as rejection:
                raise Withheld(f"own update: {rejection.reason}") from None
        blob = encode_adapter(params)
        return Trained(
            blob.data,
            blob.sha256,
            result.examples,
            result.loss,
            result.metrics,
            inline_adapter(blob),
        )
