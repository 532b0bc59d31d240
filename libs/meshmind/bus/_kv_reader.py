"""One ordered push consumer on a bucket's stream: its heartbeats, flow control, gaps and end."""

from __future__ import annotations

import asyncio
import secrets
import time

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, Header
from nats.js.client import JetStreamContext

from meshmind.bus._errors import BusError, HubUnavailable
from meshmind.bus._hub_errors import hub_errors
from meshmind.bus._logging import get_logger

LOST_AFTER_HEARTBEATS = 3
"""A consumer silent this many idle-heartbeat intervals is taken for lost."""
INACTIVE_THRESHOLD_S = 30.0
"""The hub deletes a consumer nobody listens to after this long (a reader that could not)."""
CONSUMER_PREFIX = "meshmind-"
"""Every consumer a reader creates is named with this prefix."""

_log = get_logger(__name__)
_deleting: set[asyncio.Task[None]] = set()


class ConsumerLost(HubUnavailable):
    """The consumer stopped delivering: deleted on the hub, silent, or a message was missed."""


class ConsumerReader:
    """An ordered, unacknowledged push consumer delivering the last message of every subject
    under ``filter_subject``, then every new one.

    The hub's idle heartbeats prove the consumer alive while nothing changes; a reader that
    hears nothing for :data:`LOST_AFTER_HEARTBEATS` intervals, sees a message skipped or is
    told the consumer is gone raises :class:`ConsumerLost`. :meth:`close` deletes the
    consumer on the hub, so none is left behind.
    """

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        filter_subject: str,
        *,
        heartbeat_s: float,
        headers_only: bool = False,
    ) -> None:
        self._js = js
        self._stream = stream
        self._filter = filter_subject
        self._heartbeat_s = heartbeat_s
        self._headers_only = headers_only
        self.name = f"{CONSUMER_PREFIX}{secrets.token_hex(8)}"
        self.heard_at: float | None = None
        self._alive_since = time.monotonic()
        self.initial_pending = 0
        self.delivered = 0
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._sub: Subscription | None = None
        self._created = False
        self._last_dseq = 0

    async def open(self) -> None:
        """Listen, then create the consumer (one round trip to the hub)."""
        nc = self._js._nc
        with hub_errors(f"watch {self._stream}"):
            self._sub = await nc.subscribe(nc.new_inbox(), cb=self._on_message)
            config = ConsumerConfig(
                name=self.name,
                deliver_subject=self._sub.subject,
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                ack_policy=AckPolicy.NONE,
                max_deliver=1,
                flow_control=True,
                idle_heartbeat=self._heartbeat_s,
                filter_subject=self._filter,
                headers_only=self._headers_only or None,
                mem_storage=True,
                num_replicas=1,
                inactive_threshold=max(INACTIVE_THRESHOLD_S, 3 * self._heartbeat_s),
            )
            self._created = True  # from here on a close must delete it, answered or not
            info = await self._js.add_consumer(self._stream, config)
        self.initial_pending = info.num_pending or 0
        self._alive_since = time.monotonic()

    @property
    def caught_up_at_start(self) -> bool:
        """Whether the consumer had nothing to replay when it was created."""
        return self.initial_pending == 0 and self.delivered == 0

    def silent_s(self) -> float:
        """Seconds since the hub last sent this consumer anything, heartbeats included (since
        the consumer was created, while it has sent nothing yet)."""
        return time.monotonic() - (self.heard_at or self._alive_since)

    async def next(self) -> Msg:
        """The next stream message, in order; :class:`ConsumerLost` when there will be none."""
        lost_after = LOST_AFTER_HEARTBEATS * self._heartbeat_s
        while True:
            wait = lost_after - self.silent_s()
            try:
                if wait <= 0:
                    raise TimeoutError
                async with asyncio.timeout(wait):  # wait_for can swallow a cancel (3.11)
                    msg = await self._queue.get()
            except TimeoutError:
                raise ConsumerLost(
                    f"consumer {self.name} on {self._stream} silent for {self.silent_s():.1f}s"
                ) from None
            headers = msg.headers or {}
            status = headers.get(Header.STATUS)
            if status is None:
                self._check_sequence(msg.metadata.sequence.consumer)
                return msg
            if status != "100":
                reason = headers.get(Header.DESCRIPTION, "")
                raise ConsumerLost(f"consumer {self.name} on {self._stream}: {status} {reason}")
            await self._control(msg, headers)

    async def _control(self, msg: Msg, headers: dict[str, str]) -> None:
        reply = msg.reply or headers.get(Header.CONSUMER_STALLED)
        if reply:  # flow control: everything before it has been handed on
            with hub_errors(f"watch {self._stream}"):
                await self._js._nc.publish(reply, b"")
        last = headers.get(Header.LAST_CONSUMER)
        if last is not None and last.isdigit() and int(last) != self._last_dseq:
            raise ConsumerLost(
                f"consumer {self.name} on {self._stream} delivered up to {last}, "
                f"this reader saw {self._last_dseq}"
            )

    def _check_sequence(self, consumer_seq: int) -> None:
        if consumer_seq != self._last_dseq + 1:
            raise ConsumerLost(
                f"consumer {self.name} on {self._stream} skipped from "
                f"{self._last_dseq} to {consumer_seq}"
            )
        self._last_dseq = consumer_seq

    async def _on_message(self, msg: Msg) -> None:
        self.heard_at = time.monotonic()
        if not msg.headers or Header.STATUS not in msg.headers:
            self.delivered += 1
        self._queue.put_nowait(msg)

    async def close(self) -> None:
        """Stop listening and delete the consumer on the hub (in the background: a reader on
        a slow or cut link must not wait for it; the hub's inactivity timer is the backstop)."""
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                with hub_errors(f"unsubscribe {self.name}"):
                    await sub.unsubscribe()
            except BusError:  # the connection is gone, and the subscription with it
                pass
        if self._created:
            self._created = False
            task = asyncio.get_running_loop().create_task(self._delete())
            _deleting.add(task)
            task.add_done_callback(_deleting.discard)

    async def _delete(self) -> None:
        try:
            with hub_errors(f"delete consumer {self.name}"):
                await self._js.delete_consumer(self._stream, self.name)
        except Exception as error:  # the inactivity threshold removes it later
            _log.debug("kv.consumer_delete_failed", consumer=self.name, error=str(error))


async def consumers_deleted() -> None:
    """Wait until every consumer deletion this process started has been answered."""
    while _deleting:
        await asyncio.gather(*list(_deleting), return_exceptions=True)
