"""Voters and learners on a real lab: 8 hosts with consensus, discovery and health-monitor
settle on 5 voters and 3 learners; a voter's host killed for longer than the grace period is
removed and learners take the vote (7 hosts left: all of them vote)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshmind.bus import BusError, Empty
from meshmind.bus.protocol import CONSENSUS_STATUS, ConsensusStatus
from meshmind.lab import LocalMesh, host_services, node_names
from tests.kit.consensus import connect, consensus_env
from tests.kit.waiting import eventually

NODES = node_names(8)
SERVICES = {"meshmind_consensus", "meshmind_discovery", "meshmind_health_monitor"}
GRACE_S = 10.0


@pytest.mark.timeout(600)
async def test_eight_hosts_settle_on_five_voters_and_a_lost_voter_is_replaced(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "lab"
    services = [s for s in host_services(NODES, run_dir) if s.name in SERVICES]
    env = consensus_env(
        "raft", CONSENSUS_MEMBER_GRACE_S=f"{GRACE_S:g}", CONSENSUS_BALANCE_EVERY_S="1"
    )
    mesh = LocalMesh(run_dir, NODES, services=services, service_env=env)
    try:
        await mesh.start(timeout=120)
        bus = await connect(mesh, "n1")
        views: list[ConsensusStatus] = []

        async def group_is(voters: int, learners: int, members: set[str]) -> bool:
            try:
                status = await bus.request(CONSENSUS_STATUS, Empty(), timeout=5, node="n1")
            except BusError:
                return False
            views[:] = [status]
            seen = {m.node: m.voter for m in status.members}
            return (
                status.leader is not None
                and set(seen) == members
                and sum(seen.values()) == voters
                and len(seen) - sum(seen.values()) == learners
            )

        try:
            # 24 service processes start at once on a small machine: allow them minutes
            try:
                await eventually(lambda: group_is(5, 3, set(NODES)), within=240, every=1)
            except AssertionError:
                raise AssertionError(f"not 5 voters and 3 learners: {views}") from None
            settled = views[0]
            assert settled.leader is not None
            learners = {m.node for m in settled.members if not m.voter}
            victim = next(
                m.node for m in settled.members if m.voter and m.node not in {settled.leader, "n1"}
            )

            await mesh.kill(victim)
            survivors = set(NODES) - {victim}
            try:
                await eventually(lambda: group_is(7, 0, survivors), within=GRACE_S + 120, every=1)
            except AssertionError:
                raise AssertionError(f"{victim} was not replaced: {views}") from None
            replaced = views[0]
            assert victim not in {m.node for m in replaced.members}
            assert learners <= {m.node for m in replaced.members if m.voter}
        finally:
            await bus.close()
    finally:
        await mesh.stop()
