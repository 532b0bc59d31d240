"""Execute: the actuators behind each action, dry-run on real hosts unless enabled."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

from meshmind.bus import ServiceError, get_logger
from meshmind.bus.protocol import (
    FL_EXCLUSION_HOLDER,
    ConsensusStatus,
    DecisionRecord,
    LeaseRequest,
    LeaseState,
    MemberChange,
)
from meshmind.federation import exclusion_key

_log = get_logger(__name__)

ActuatorMode = Literal["lab", "dry-run", "compose", "systemd"]
"""``lab``: the local mesh's control service; ``dry-run``: log the exact command; ``compose``
and ``systemd``: run it on this host."""


class ConsensusControl(Protocol):
    """The consensus endpoints the actuators use."""

    async def status(self) -> ConsensusStatus: ...

    async def transfer(self, leader: str, to: str) -> ConsensusStatus: ...

    async def change(self, leader: str, change: MemberChange) -> ConsensusStatus: ...

    async def lease(self, request: LeaseRequest) -> LeaseState: ...


class LabControl(Protocol):
    """The lab's control service."""

    async def restart_services(self, node: str) -> str: ...


class CommandRunner(Protocol):
    """Runs a command on this host: its exit status and output."""

    async def run(self, argv: Sequence[str]) -> tuple[int, str]: ...


class SubprocessRunner:
    """Runs commands as child processes, with a time limit."""

    def __init__(self, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s

    async def run(self, argv: Sequence[str]) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(self.timeout_s):
                output, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            return -1, f"timed out after {self.timeout_s:g}s"
        return process.returncode or 0, output.decode(errors="replace")[-500:]


def host_commands(
    action: str, mode: ActuatorMode, *, compose_project: str, interface: str, batman: str
) -> list[list[str]]:
    """The commands that carry out ``action`` on a real host (none for mesh-level actions)."""
    if action == "restart-services":
        if mode == "systemd":
            return [["systemctl", "restart", "meshmind.target"]]
        return [["docker", "compose", "-p", compose_project, "restart"]]
    if action == "reset-interface":
        return [
            ["ip", "link", "set", "dev", interface, "down"],
            ["ip", "link", "set", "dev", interface, "up"],
            ["batctl", "meshif", batman, "interface", "add", interface],
        ]
    return []


class Actuators:
    """Carries out a committed decision and says what it did."""

    def __init__(
        self,
        node: str,
        mode: ActuatorMode,
        consensus: ConsensusControl,
        *,
        lab: LabControl | None = None,
        runner: CommandRunner | None = None,
        alive: Callable[[], set[str]] | None = None,
        exclusion_ttl_s: float = 600.0,
        compose_project: str = "meshmind",
        interface: str = "wlan0",
        batman: str = "bat0",
    ) -> None:
        if mode == "lab" and lab is None:
            raise ValueError("the lab actuator needs the lab's control")
        self.node = node
        self.mode = mode
        self.consensus = consensus
        self.lab = lab
        self.runner = runner or SubprocessRunner()
        self.alive = alive
        self.exclusion_ttl_s = exclusion_ttl_s
        self.compose_project = compose_project
        self.interface = interface
        self.batman = batman

    async def act(self, record: DecisionRecord) -> str:
        """Execute ``record``'s action on its target."""
        action, target = record.action, record.target
        if action == "wait":
            return "waited: nothing to do"
        if action == "transfer-leadership":
            return await self._transfer_off(target)
        if action == "demote-voter":
            return await self._demote(target)
        if action == "promote-voter":
            return await self._promote(target)
        if action == "exclude-trainer":
            return await self._exclude(target)
        if action == "restart-services" and self.mode == "lab" and self.lab is not None:
            return await self.lab.restart_services(target)
        return await self._on_host(action, target)

    async def _on_host(self, action: str, target: str) -> str:
        commands = host_commands(
            action,
            self.mode,
            compose_project=self.compose_project,
            interface=self.interface,
            batman=self.batman,
        )
        shown = " && ".join(shlex.join(c) for c in commands)
        if self.mode in ("dry-run", "lab") or target != self.node:
            where = "here" if target == self.node else f"on {target}"
            _log.info("actuator.dry_run", action=action, target=target, command=shown)
            return f"dry-run: would run `{shown}` {where}"
        for argv in commands:
            code, output = await self.runner.run(argv)
            if code != 0:
                raise ServiceError(500, f"`{shlex.join(argv)}` exited {code}: {output.strip()}")
        return f"ran `{shown}`"

    async def _transfer_off(self, target: str) -> str:
        status = await self.consensus.status()
        if status.leader != target:
            return f"the leader ({status.leader or 'none'}) is not {target}: nothing to move"
        live = self.alive() if self.alive is not None else None
        successor = _successor(status, avoid={target}, alive=live)
        if successor is None:
            raise ServiceError(409, f"no other voter to take the lead from {target}")
        await self.consensus.transfer(target, successor)
        return f"leadership moved from {target} to {successor}"

    async def _demote(self, target: str) -> str:
        status = await self.consensus.status()
        voters = {m.node for m in status.members if m.voter}
        if target not in voters:
            return f"{target} is not a voter: nothing to demote"
        if len(voters) <= 2:
            return f"{target} stays a voter: demoting it would leave {len(voters) - 1} voter"
        moved = ""
        if status.leader == target:
            moved = await self._transfer_off(target) + "; "
            status = await self._wait_leader(avoid=target)
        leader = status.leader
        if leader is None:
            raise ServiceError(503, "no leader to change the group")
        await self.consensus.change(leader, MemberChange(action="remove", node=target))
        await self.consensus.change(leader, MemberChange(action="add-learner", node=target))
        return f"{moved}{target} demoted to learner"

    async def _promote(self, target: str) -> str:
        status = await self.consensus.status()
        if status.leader is None:
            raise ServiceError(503, "no leader to change the group")
        await self.consensus.change(status.leader, MemberChange(action="add-voter", node=target))
        return f"{target} promoted back to voter"

    async def _exclude(self, target: str) -> str:
        """Keep ``target`` out of every coordinator's trainer selection for a while: the lease
        ``fl/excluded/<target>`` (granted again, it is extended)."""
        key = exclusion_key(target)
        request = LeaseRequest(
            action="grant", key=key, holder=FL_EXCLUSION_HOLDER, ttl_s=self.exclusion_ttl_s
        )
        state = await self.consensus.lease(request)
        if not state.ok:
            by = f"held by {state.holder}" if state.holder else "set by hand"
            return f"{target} is excluded from training already ({key} {by})"
        return f"{target} excluded from training for {self.exclusion_ttl_s:g}s ({key})"

    async def _wait_leader(self, avoid: str, within_s: float = 5.0) -> ConsensusStatus:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while True:
            status = await self.consensus.status()
            if status.leader not in (None, avoid) or loop.time() > deadline:
                return status
            await asyncio.sleep(0.1)


def _successor(status: ConsensusStatus, avoid: set[str], alive: set[str] | None) -> str | None:
    """The voter to hand leadership to: one that is up, the most caught up, then by name."""
    voters = [
        m
        for m in status.members
        if m.voter and m.node not in avoid and (alive is None or m.node in alive)
    ]
    if not voters:
        return None
    return max(voters, key=lambda m: (m.match_index or 0, [-ord(c) for c in m.node])).node
