"""meshctl drives a real lab process: up, status, link, node, services, watch, down; and the
lab leaves no process behind, whether it is told to stop, interrupted or killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshmind.bus.protocol import (
    CONSENSUS_SERVICE,
    DECISION_SERVICE,
    DISCOVERY_SERVICE,
    FL_COORDINATOR_SERVICE,
    FL_TRAINER_SERVICE,
    HEALTH_SERVICE,
)
from meshmind.lab._state import pid_alive
from tests.kit.stubborn import READY


def meshctl(
    run_dir: Path, *args: str, check: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    """meshctl as an operator runs it: against the lab's hub, or with ``env`` (``NATS_URL``,
    ``NODE_ID``) as on a host."""
    inherited = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "NODE_ID")}
    return subprocess.run(
        [sys.executable, "-m", "meshmind.ctl", *args, "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=90,
        check=check,
        env=inherited | env,
    )


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def wait_gone(pids: list[int], within: float = 15.0) -> list[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if pid_alive(p)]


def lab_pids(status: dict[str, Any]) -> list[int]:
    return [status["hub_pid"], *(h["pid"] for h in status["hosts"] if h["pid"])]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Path]:
    run_dir = tmp_path / "lab"
    meshctl(run_dir, "up", "--nodes", "3", "--no-services", "--json")
    yield run_dir
    meshctl(run_dir, "down", check=False)


def test_operator_session_from_up_to_down(lab: Path) -> None:
    status = as_json(meshctl(lab, "status", "--json"))
    assert [h["node"] for h in status["hosts"]] == ["n1", "n2", "n3"]
    assert all(h["running"] and h["link"]["connections"] == 1 for h in status["hosts"])

    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshmind.ctl",
            "watch",
            "mesh.lab.events.>",
            "--count",
            "2",
            "--seconds",
            "60",
            "--run-dir",
            str(lab),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watcher.stderr is not None
    assert watcher.stderr.readline().startswith("watching mesh.lab.events.>")
    shaped = as_json(
        meshctl(
            lab,
            "link",
            "set",
            "n2",
            "--delay",
            "80ms",
            "--jitter",
            "20ms",
            "--rate",
            "1mbit",
            "--stall",
            "5%",
            "--json",
        )
    )
    assert shaped["shape"] == {
        "delay_ms": 80.0,
        "jitter_ms": 20.0,
        "rate_bps": 1_000_000,
        "stall_pct": 5.0,
        "stall_ms": 200.0,
    }
    cut = as_json(meshctl(lab, "link", "cut", "n3", "--json"))
    assert (cut["cut"], cut["cut_mode"]) == (True, "loud")
    events, _ = watcher.communicate(timeout=60)
    assert watcher.returncode == 0
    lines = [json.loads(line) for line in events.splitlines()]
    assert [(e["subject"], e["type"], e["data"]["kind"]) for e in lines] == [
        ("mesh.lab.events.n2", "LabEvent", "link-set"),
        ("mesh.lab.events.n3", "LabEvent", "link-cut"),
    ]

    restored = as_json(meshctl(lab, "link", "restore", "n3", "--json"))
    assert restored["cut"] is False

    killed = as_json(meshctl(lab, "node", "kill", "n1", "--json"))
    assert killed["running"] is False
    assert wait_gone([status["hosts"][0]["pid"]]) == []
    restarted = as_json(meshctl(lab, "node", "restart", "n1", "--json"))
    assert restarted["running"] is True

    services = as_json(meshctl(lab, "services", "--json"))
    assert [(s["name"], s["node"]) for s in services] == [("meshmind-lab", "lab")]
    assert "mesh.lab.status" in services[0]["endpoints"]

    final = as_json(meshctl(lab, "status", "--json"))
    meshctl(lab, "down")
    assert wait_gone(lab_pids(final)) == []
    after = meshctl(lab, "status", check=False)
    assert after.returncode == 1
    assert f"no lab is running in {lab}" in after.stderr


def test_silent_and_one_way_cuts_from_the_command_line(lab: Path) -> None:
    silent = as_json(meshctl(lab, "link", "cut", "n2", "--silent", "--json"))
    assert (silent["cut"], silent["cut_mode"]) == (True, "silent")
    assert silent["connections"] == 1, "a silent cut keeps the leaf's connection open"
    assert "cut silently" in meshctl(lab, "status").stdout

    restored = as_json(meshctl(lab, "link", "restore", "n2", "--json"))
    assert (restored["cut"], restored["cut_mode"]) == (False, None)

    one_way = meshctl(lab, "link", "cut", "n3", "--one-way", "up")
    assert "n3: cut one way: up (host -> hub) dropped" in one_way.stdout
    status = as_json(meshctl(lab, "status", "--json"))
    modes = {h["node"]: h["link"]["cut_mode"] for h in status["hosts"]}
    assert modes == {"n1": None, "n2": None, "n3": "up"}

    both = meshctl(lab, "link", "cut", "n1", "--silent", "--one-way", "down", check=False)
    assert both.returncode == 1
    assert "--silent and --one-way exclude each other" in both.stderr
    sideways = meshctl(lab, "link", "cut", "n1", "--one-way", "sideways", check=False)
    assert sideways.returncode != 0
    assert as_json(meshctl(lab, "status", "--json"))["hosts"][0]["link"]["cut"] is False


def test_bad_operator_input_gets_one_clear_line(lab: Path) -> None:
    unknown = meshctl(lab, "link", "cut", "n9", check=False)
    assert unknown.returncode == 1
    assert "no host 'n9'" in unknown.stderr

    bad_unit = meshctl(lab, "link", "set", "n1", "--delay", "fast", check=False)
    assert bad_unit.returncode == 1
    assert "'fast' is not a duration" in bad_unit.stderr

    twice = meshctl(lab, "up", check=False)
    assert twice.returncode == 1
    assert "already running" in twice.stderr


def test_down_stops_hosts_whose_services_ignore_sigterm_within_one_bound(tmp_path: Path) -> None:
    run_dir, hosts, bound = tmp_path / "lab", 4, 4.0
    argv = [sys.executable, "-m", "meshmind.lab", "--nodes", str(hosts), "--run-dir", str(run_dir)]
    argv += ["--service", f"stubborn={sys.executable} -m tests.kit.stubborn"]
    argv += ["--service-stop", f"{bound:g}"]
    run_dir.mkdir(parents=True)
    with (run_dir / "lab.log").open("ab") as log:
        lab = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        logs = [run_dir / f"n{i}" / "stubborn.log" for i in range(1, hosts + 1)]
        deadline = time.monotonic() + 60
        while not all(log.exists() and READY in log.read_text() for log in logs):
            assert lab.poll() is None, (run_dir / "lab.log").read_text()
            assert time.monotonic() < deadline, "the stubborn services did not start"
            time.sleep(0.2)
        status = as_json(meshctl(run_dir, "status", "--json"))

        # One host after the other would take hosts x bound; together, one bound and the servers.
        down = meshctl(run_dir, "down", "--timeout", f"{2 * bound:g}")

        assert down.returncode == 0
        assert "killed" not in down.stdout, down.stdout
        assert f"lab in {run_dir} is down" in down.stdout
        assert "left by an earlier lab" not in down.stderr, "down must leave nothing to reap"
        assert lab.wait(timeout=5) == 0
        assert wait_gone(lab_pids(status)) == []
    finally:
        if lab.poll() is None:
            lab.kill()


@pytest.mark.parametrize(
    "how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["ctrl-c", "sigterm", "sigkill"]
)
def test_lab_leaves_no_process_behind(tmp_path: Path, how: signal.Signals) -> None:
    run_dir = tmp_path / "lab"
    status = as_json(meshctl(run_dir, "up", "--nodes", "2", "--no-services", "--json"))
    state = json.loads((run_dir / "lab.json").read_text())

    os.kill(state["pid"], how)

    assert wait_gone([state["pid"], *lab_pids(status)]) == []


EVERY_SERVICE = {
    DISCOVERY_SERVICE,
    HEALTH_SERVICE,
    CONSENSUS_SERVICE,
    DECISION_SERVICE,
    FL_COORDINATOR_SERVICE,
    FL_TRAINER_SERVICE,
}
"""What `meshctl up` runs on every host."""


def test_peers_and_links_of_a_lab_with_services(tmp_path: Path) -> None:
    run_dir = tmp_path / "lab"
    meshctl(run_dir, "up", "--nodes", "3", "--json")
    try:
        deadline = time.monotonic() + 60
        peers: dict[str, Any] = {}
        while time.monotonic() < deadline:
            result = meshctl(run_dir, "peers", "--node", "n2", "--json", check=False)
            peers = as_json(result) if result.returncode == 0 else {}
            services = [set(p["services"]) for p in peers.get("peers", [])]
            if len(services) == 3 and all(s == EVERY_SERVICE for s in services):
                break
            time.sleep(0.5)
        assert [p["node"] for p in peers["peers"]] == ["n1", "n2", "n3"]
        assert peers["observer"] == "n2"
        assert not peers["stale"]
        assert all(p["services"] == sorted(EVERY_SERVICE) for p in peers["peers"])

        # On host n2, against its own leaf, where only n2's reply inbox is permitted.
        leaf = {
            h["node"]: h["leaf_url"] for h in as_json(meshctl(run_dir, "status", "--json"))["hosts"]
        }
        on_host = meshctl(run_dir, "peers", "--json", NATS_URL=leaf["n2"], NODE_ID="n2")
        assert [p["node"] for p in as_json(on_host)["peers"]] == ["n1", "n2", "n3"]

        links: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            links = as_json(meshctl(run_dir, "links", "--json"))
            if len(links) == 6 and all(link["state"] == "good" for link in links):
                break
            time.sleep(0.5)
        assert [(link["source"], link["target"]) for link in links] == [
            ("n1", "n2"),
            ("n1", "n3"),
            ("n2", "n1"),
            ("n2", "n3"),
            ("n3", "n1"),
            ("n3", "n2"),
        ]
        table = meshctl(run_dir, "links").stdout
        assert "link quality (row -> column)" in table
    finally:
        meshctl(run_dir, "down")
