"""A mesh-wide health sweep: a diffusing computation whose termination the initiator detects
(Dijkstra-Scholten), over a transport that may lose nothing it has not been told of: every
work message and signal is sent again until its receipt arrives."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from meshmind.bus import ServiceError, get_logger
from meshmind.bus.protocol import (
    SweepHostReport,
    SweepReceipt,
    SweepResult,
    SweepSignal,
    SweepWork,
)
from meshmind.decision._termination import Signal, TerminationDetector, Work

_log = get_logger(__name__)

FORGET_AFTER_S = 120.0
"""A computation's state here (its duplicate filter, messages still unreceipted) is dropped
this long after it started or first engaged this host."""


class SweepTransport(Protocol):
    """Sends the sweep's messages to other hosts (best effort: the sweep retransmits)."""

    async def work(self, message: SweepWork) -> None: ...

    async def signal(self, message: SweepSignal) -> None: ...

    async def receipt(self, message: SweepReceipt) -> None: ...


@dataclass
class _Computation:
    reports: dict[str, SweepHostReport] = field(default_factory=dict)
    worked: bool = False
    busy: bool = False
    """This host's own check and forwarding are under way: it stays active until they end."""
    done: asyncio.Future[None] | None = None
    started: float = 0.0


class Sweeper:
    """One host's part in health sweeps: the root's start, and every host's handling."""

    def __init__(
        self,
        node: str,
        transport: SweepTransport,
        check: Callable[[], Awaitable[SweepHostReport]],
        peers: Callable[[], list[str]],
        *,
        retransmit_s: float = 0.2,
    ) -> None:
        self.node = node
        self.transport = transport
        self.check = check
        self.peers = peers
        self.retransmit_s = retransmit_s
        self.detector = TerminationDetector(node)
        self.sent = 0
        self.duplicates = 0
        self._computations: dict[str, _Computation] = {}
        self._unreceipted: dict[tuple[str, str, str, int], asyncio.Task[None]] = {}

    async def sweep(self, timeout_s: float) -> SweepResult:
        """Start a sweep here; the result once every engaged host is done."""
        computation = f"{self.node}-{secrets.token_hex(6)}"
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state = _Computation(done=done, started=asyncio.get_running_loop().time())
        self._computations[computation] = state
        self.detector.start(computation)
        self._later_forget(computation)
        try:
            async with asyncio.timeout(timeout_s):
                await self._engaged(computation, state, parent=None)
                await done
        except TimeoutError:
            raise ServiceError(
                504, f"sweep {computation} not finished within {timeout_s:g}s"
            ) from None
        return SweepResult(
            node=self.node,
            computation=computation,
            reports=sorted(state.reports.values(), key=lambda r: r.node),
            duration_s=asyncio.get_running_loop().time() - state.started,
            messages=self.sent,
        )

    async def _engaged(self, computation: str, state: _Computation, parent: str | None) -> None:
        """This host's local work, once per computation: check its own health, pass the sweep
        on to its peers, then turn passive. Engaged again later, it has nothing left to do."""
        if not state.worked:
            state.worked = True
            state.busy = True
            try:
                report = await self.check()
                state.reports[self.node] = report.model_copy(update={"parent": parent})
                for peer in self.peers():
                    if peer not in (self.node, parent):
                        self._send_work(self.detector.send(computation, peer))
            finally:
                state.busy = False
        self._send_signals(self.detector.passive(computation))
        self._maybe_done(computation)

    async def on_work(self, message: SweepWork) -> None:
        """A work message for this host: a receipt at once, then the algorithm."""
        if message.recipient != self.node:
            return
        receipt = self._receipt(message.computation, message.sender, "work", message.msg_id)
        await self.transport.receipt(receipt)
        work = Work(message.computation, message.sender, message.recipient, message.msg_id)
        new, signals = self.detector.receive(work)
        if not new:
            self.duplicates += 1
            return
        state = self._computations.get(message.computation)
        if state is None:
            state = self._computations[message.computation] = _Computation()
            self._later_forget(message.computation)
        if not signals:  # it engaged this host: the sender is its parent
            await self._engaged(message.computation, state, parent=message.sender)
            return
        self._send_signals(signals)  # acknowledged at once: this host is engaged already
        if not state.busy:
            self._send_signals(self.detector.passive(message.computation))

    async def on_signal(self, message: SweepSignal) -> None:
        """A signal for work this host sent."""
        if message.recipient != self.node:
            return
        receipt = self._receipt(message.computation, message.sender, "signal", message.acks)
        await self.transport.receipt(receipt)
        state = self._computations.get(message.computation)
        if state is None:
            return
        for report in message.reports:
            state.reports.setdefault(report.node, report)
        signal = Signal(message.computation, message.sender, message.recipient, message.acks)
        self._send_signals(self.detector.acknowledge(signal))
        self._maybe_done(message.computation)

    async def on_receipt(self, message: SweepReceipt) -> None:
        """A receipt: stop retransmitting what it acknowledges."""
        if message.recipient != self.node:
            return
        key = (message.of, message.computation, message.sender, message.msg_id)
        task = self._unreceipted.pop(key, None)
        if task is not None:
            task.cancel()

    def _maybe_done(self, computation: str) -> None:
        state = self._computations.get(computation)
        if (
            state is not None
            and state.done is not None
            and not state.done.done()
            and self.detector.terminated(computation)
        ):
            state.done.set_result(None)

    def _send_work(self, work: Work) -> None:
        message = SweepWork(
            computation=work.computation,
            sender=self.node,
            recipient=work.recipient,
            msg_id=work.msg_id,
        )
        key = ("work", work.computation, work.recipient, work.msg_id)
        self._reliably(key, self.transport.work, message)

    def _send_signals(self, signals: list[Signal]) -> None:
        for signal in signals:
            state = self._computations.get(signal.computation)
            detaching = state is not None and not self.detector.engaged(signal.computation)
            reports = list(state.reports.values()) if detaching and state is not None else []
            message = SweepSignal(
                computation=signal.computation,
                sender=self.node,
                recipient=signal.recipient,
                acks=signal.acks,
                reports=reports,
            )
            key = ("signal", signal.computation, signal.recipient, signal.acks)
            self._reliably(key, self.transport.signal, message)

    def _reliably(
        self,
        key: tuple[str, str, str, int],
        send: Callable[[SweepWork], Awaitable[None]] | Callable[[SweepSignal], Awaitable[None]],
        message: SweepWork | SweepSignal,
    ) -> None:
        async def until_receipted() -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + FORGET_AFTER_S
            while loop.time() < deadline:
                try:
                    await send(message)  # type: ignore[arg-type]
                    self.sent += 1
                except ServiceError as error:
                    _log.debug("sweep.send_failed", error=error.description)
                await asyncio.sleep(self.retransmit_s)
            self._unreceipted.pop(key, None)

        self._unreceipted[key] = asyncio.create_task(until_receipted())

    def _receipt(self, computation: str, sender: str, of: str, msg_id: int) -> SweepReceipt:
        return SweepReceipt(
            computation=computation,
            sender=self.node,
            recipient=sender,
            of=of,
            msg_id=msg_id,
        )

    def _later_forget(self, computation: str) -> None:
        def forget() -> None:
            self._computations.pop(computation, None)
            self.detector.forget(computation)
            for key in [k for k in self._unreceipted if k[1] == computation]:
                self._unreceipted.pop(key).cancel()

        asyncio.get_running_loop().call_later(FORGET_AFTER_S, forget)

    async def close(self) -> None:
        """Stop every retransmission."""
        for task in self._unreceipted.values():
            task.cancel()
        await asyncio.gather(*self._unreceipted.values(), return_exceptions=True)
        self._unreceipted.clear()
