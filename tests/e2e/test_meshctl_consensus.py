"""meshctl drives the consensus service of a real lab: the group's status, leader, members and
leadership, the decision log, and the key-value store, as tables and as JSON; bad input is one
line on stderr and exit status 1."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meshmind.bus.protocol import CONSENSUS_PROPOSE, DecisionProposal
from meshmind.lab import node_names
from tests.kit.consensus import ask, connect, consensus_lab, wait_for_leader

NODES = node_names(3)


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class Meshctl:
    """meshctl as an operator runs it, a process of its own, against the lab's hub."""

    def __init__(self, hub_url: str, run_dir: Path) -> None:
        self.hub_url = hub_url
        self.run_dir = run_dir

    async def __call__(self, *args: str, expect: int = 0) -> Run:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "meshmind.ctl",
            *args,
            "--url",
            self.hub_url,
            "--run-dir",
            str(self.run_dir),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "COLUMNS": "200"},
        )
        out, err = await asyncio.wait_for(process.communicate(), 90)
        run = Run(process.returncode or 0, out.decode(), err.decode())
        assert run.code == expect, f"meshctl {' '.join(args)} exited {run.code}: {run.stderr}"
        return run


def one_error_line(run: Run) -> str:
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.timeout(300)
async def test_operator_session_over_the_consensus_group(tmp_path: Path) -> None:
    async with consensus_lab(tmp_path / "lab", NODES, "raft") as mesh:
        bus = await connect(mesh, "n1")
        try:
            leader = await wait_for_leader(bus)
            await ask(
                bus, CONSENSUS_PROPOSE, DecisionProposal(record="rebalance", idempotency_key="d1")
            )
        finally:
            await bus.close()
        meshctl = Meshctl(mesh.hub_url, tmp_path / "no-lab")

        # the group, as every host sees it
        statuses = (await meshctl("consensus", "status", "--json")).json()
        assert [s["node"] for s in statuses] == NODES
        assert {s["leader"] for s in statuses} == {leader}
        assert [s["role"] for s in statuses].count("leader") == 1
        assert all(
            len(s["members"]) == 3 and all(m["voter"] for m in s["members"]) for s in statuses
        )
        table = (await meshctl("consensus", "status")).stdout
        assert "consensus on 3 host(s)" in table
        assert all(node in table for node in NODES)

        seen = (await meshctl("consensus", "leader", "--json", "--node", "n3")).json()
        assert (seen["leader"], seen["seen_by"]) == (leader, "n3")
        assert f"{leader} leads in term" in (await meshctl("consensus", "leader")).stdout

        # the key-value store, through any host
        put = (await meshctl("kv", "put", "roles/coordinator", "n2", "--json")).json()
        assert (put["ok"], put["value"]) == (True, "n2")
        got = (await meshctl("kv", "get", "roles/coordinator", "--node", "n3")).stdout
        assert f"roles/coordinator = 'n2' (revision {put['revision']})" in got
        refused = await meshctl(
            "kv", "cas", "roles/coordinator", "n3", "--expected", "n1", "--json", expect=1
        )
        assert refused.json() == {**put, "ok": False}
        swapped = (
            await meshctl("kv", "cas", "roles/coordinator", "n3", "--expected", "n2", "--json")
        ).json()
        assert (swapped["ok"], swapped["value"]) == (True, "n3")
        assert swapped["revision"] > put["revision"]
        created = await meshctl("kv", "cas", "roles/standby", "n1")
        assert "roles/standby = 'n1'" in created.stdout
        assert (await meshctl("kv", "del", "roles/coordinator", "--json")).json()["ok"]
        gone = (await meshctl("kv", "get", "roles/coordinator", "--json")).json()
        assert (gone["value"], gone["revision"]) == (None, 0)
        assert (
            "roles/coordinator: no value"
            in (await meshctl("kv", "get", "roles/coordinator")).stdout
        )

        # the decision log
        log = (await meshctl("consensus", "log", "--json")).json()
        assert log["last_seq"] == 1
        assert [(d["seq"], d["record"], d["idempotency_key"]) for d in log["decisions"]] == [
            (1, "rebalance", "d1")
        ]
        assert "rebalance" in (await meshctl("consensus", "log")).stdout
        assert (await meshctl("consensus", "log", "--after", "1", "--json")).json()[
            "decisions"
        ] == []

        # members: a follower out, back as a learner, promoted
        follower = next(n for n in NODES if n != leader)
        members = (await meshctl("consensus", "members", "--json")).json()
        assert members["node"] == leader
        assert all(m["match_index"] is not None for m in members["members"])
        removed = (await meshctl("consensus", "members", "remove", follower, "--json")).json()
        assert sorted(m["node"] for m in removed["members"]) == sorted(set(NODES) - {follower})
        learner = await meshctl("consensus", "members", "add", follower, "--learner")
        assert any(follower in row and "learner" in row for row in learner.stdout.splitlines())
        promoted = (await meshctl("consensus", "members", "add", follower, "--json")).json()
        assert {m["node"]: m["voter"] for m in promoted["members"]} == dict.fromkeys(NODES, True)
        assert "voter, leader" in (await meshctl("consensus", "members")).stdout

        # leadership, handed to another voter and back
        moved = (await meshctl("consensus", "transfer", follower, "--json")).json()
        assert (moved["node"], moved["leader"], moved["role"]) == (follower, follower, "leader")
        back = await meshctl("consensus", "transfer", leader)
        assert f"{leader} leads in term" in back.stdout

        # bad input: one line on stderr, exit status 1
        bad_key = one_error_line(await meshctl("kv", "get", ".hidden", expect=1))
        assert "'.hidden' is not a valid key" in bad_key
        stranger = one_error_line(await meshctl("consensus", "transfer", "n9", expect=1))
        assert "n9" in stranger
        nobody = one_error_line(await meshctl("kv", "get", "x", "--node", "n9", expect=1))
        assert "n9" in nobody
        both = await meshctl("kv", "cas", "k", "v", "--expected", "a", "--revision", "1", expect=1)
        assert "exclude each other" in one_error_line(both)
