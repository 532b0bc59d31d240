"""A full secure lab run, driven with meshctl: no credential it uses ever shows up in a log
line, an exported span or a command's output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from meshmind.security import MeshCredentials

NODES = ["n1", "n2", "n3"]


class Meshctl:
    """Runs meshctl in a secure-lab environment and keeps everything it printed."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.printed: list[str] = []

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "meshmind.ctl", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=self.env,
        )
        self.printed += [result.stdout, result.stderr]
        if check:
            assert result.returncode == 0, result.stderr
        return result


def _secrets(creds: MeshCredentials) -> list[str]:
    """Every secret in a credentials directory: seeds, and the body lines of private keys."""
    found = [creds.host_key(node).seed.decode() for node in creds.nodes()]
    for pem in (creds.ca_key, creds.hub_key):
        found += [line for line in pem.read_text().splitlines() if "-----" not in line]
    return found


def test_a_secure_lab_run_prints_logs_and_exports_no_credential(tmp_path: Path) -> None:
    run_dir = tmp_path / "lab"
    env = {
        k: v for k, v in os.environ.items() if k not in ("NATS_URL", "OTEL_EXPORTER_OTLP_ENDPOINT")
    }
    env |= {
        "MESHMIND_LAB_SECURE": "1",
        "MESHMIND_LAB_DIR": str(run_dir),
        "OTEL_TRACES_EXPORTER": "console",
        "LOG_LEVEL": "debug",
        "PROBE_INTERVAL_S": "0.5",
    }
    meshctl = Meshctl(env)
    other = tmp_path / "creds"
    try:
        meshctl("up", "--nodes", str(len(NODES)), "--json")
        deadline = time.monotonic() + 120
        while True:
            listed = meshctl("peers", "--node", "n1", "--json", check=False)
            if listed.returncode == 0 and len(json.loads(listed.stdout)["peers"]) == len(NODES):
                break
            assert time.monotonic() < deadline, "the secure lab did not converge"
            time.sleep(1)
        meshctl("status", "--json")
        meshctl("services", "--json")
        meshctl("links", "--json")
        meshctl("link", "set", "n2", "--delay", "40ms")
        meshctl("link", "restore", "n2")
        meshctl("creds", "generate", "--nodes", "a,b", "--out", str(other))
        meshctl("creds", "check", "--out", str(other))
        meshctl("creds", "generate", "--nodes", "a.b", "--out", str(other), check=False)
    finally:
        meshctl("down", check=False)

    lab_secrets = _secrets(MeshCredentials(run_dir / "secrets"))
    secrets = lab_secrets + _secrets(MeshCredentials(other))
    assert len(lab_secrets) > len(NODES)  # every host's seed and both private keys
    logs = {p: p.read_text(errors="replace") for p in run_dir.rglob("*.log")}
    spans = [text for text in logs.values() if '"span_id"' in text]
    assert spans, "the services exported no span, so the search would prove nothing"
    haystacks = {
        **{str(p): text for p, text in logs.items()},
        "meshctl": "\n".join(meshctl.printed),
    }
    for where, text in haystacks.items():
        for secret in secrets:
            assert secret not in text, f"a credential appears in {where}"
    seed_file = MeshCredentials(run_dir / "secrets").host_seed("n1").read_text()
    assert lab_secrets[0] in seed_file  # the search looks for what is really there
