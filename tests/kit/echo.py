"""A tiny real service for tests: echoes, sleeps on request, fails on request."""

from __future__ import annotations

import asyncio
import os
import threading

from pydantic import Field

from meshmind.bus import Bus, Contract, Message, ServiceError, ServiceKit, run

TEST_CONTRACT = Contract()
ECHO_SERVICE = "meshmind-echo"


class EchoRequest(Message):
    """What to echo, and how to behave."""

    text: str = Field(max_length=10_000)
    sleep_s: float = Field(default=0.0, ge=0, le=30)
    fail_with: int | None = None
    crash: bool = False


class EchoReply(Message):
    """The echo, and who answered."""

    text: str
    node: str


class Ping(Message):
    """A typed event."""

    seq: int
    origin: str


ECHO = TEST_CONTRACT.endpoint(
    ECHO_SERVICE,
    "echo",
    "mesh.test.echo.{node}",
    EchoRequest,
    EchoReply,
    "Echo text back.",
    max_request_bytes=16 * 1024,
)
PINGS = TEST_CONTRACT.event("mesh.test.ping.{node}", Ping, "A test event.")


LINGERING_THREAD = "ECHO_LINGERING_THREAD"
"""Set, the echo process also starts a worker thread that never ends, as a library's pool may
(the interpreter's teardown would wait for it forever)."""


async def setup_echo(bus: Bus, kit: ServiceKit) -> None:
    """Serve ECHO for this bus's node."""
    if os.environ.get(LINGERING_THREAD):
        threading.Thread(target=threading.Event().wait, name="lingering").start()

    async def echo(request: EchoRequest) -> EchoReply:
        if request.sleep_s:
            await asyncio.sleep(request.sleep_s)
        if request.fail_with is not None:
            raise ServiceError(request.fail_with, f"asked to fail with {request.fail_with}")
        if request.crash:
            raise RuntimeError("asked to crash")
        return EchoReply(text=request.text, node=bus.node_id)

    kit.endpoint(ECHO, echo, node=bus.node_id)


if __name__ == "__main__":
    run(ECHO_SERVICE, "1.0.0", setup_echo, description="Test echo service.")
