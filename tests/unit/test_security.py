"""Permissions derived from the contract, the generated hub authorization and its staleness,
credentials on disk, the mesh CA, and redaction of secrets."""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from meshmind.bus import MASK, Contract, Party, redact, redact_event, subject_matches
from meshmind.bus.protocol import CONTRACT, NodeRef
from meshmind.lab import ServerPorts, hub_config, nats_server_binary
from meshmind.lab._nats_config import HubSecurity
from meshmind.security import (
    authorization_is_current,
    generate_credentials,
    host_keys_in,
    host_permissions,
    hub_authorization,
    issue_server_cert,
    new_ca,
    new_host_key,
)

REPO = Path(__file__).resolve().parents[2]


def _allowed(subjects: tuple[str, ...], subject: str) -> bool:
    return any(subject_matches(pattern, subject) for pattern in subjects)


@pytest.mark.parametrize(
    "subject",
    [
        "mesh.health.n1.link",
        "mesh.host.n1.beats",
        "mesh.peers.n1.changes",
        "$JS.hub.API.$KV.mesh-peers.n1",
        "$JS.hub.API.$KV.mesh-links.n1.n2",
        "mesh.lab.link.cut",
        "mesh.lab.events.n2",
        "$JS.hub.API.STREAM.PURGE.KV_mesh-peers",
        "$JS.hub.API.STREAM.DELETE.KV_mesh-links",
    ],
)
def test_a_host_may_not_publish_what_another_host_or_the_operator_says(subject: str) -> None:
    n2 = host_permissions("n2")
    assert not _allowed(n2.publish_allow, subject) or _allowed(n2.publish_deny, subject)


@pytest.mark.parametrize(
    "subject",
    [
        "mesh.health.n2.link",
        "mesh.host.n2.beats",
        "mesh.peers.n2.changes",
        "mesh.health.n1.probe",
        "mesh.discovery.n3.peers",
        "$JS.hub.API.$KV.mesh-peers.n2",
        "$JS.hub.API.$KV.mesh-links.n2.n1",
        "_INBOX.abc.def",
    ],
)
def test_a_host_may_publish_its_own_reports_and_requests_to_anyone(subject: str) -> None:
    n2 = host_permissions("n2")
    assert _allowed(n2.publish_allow, subject)
    assert not _allowed(n2.publish_deny, subject)


def test_a_host_receives_its_own_requests_and_beats_only_and_everyones_reports() -> None:
    n2 = host_permissions("n2").subscribe_allow
    assert _allowed(n2, "mesh.health.n2.probe")
    assert _allowed(n2, "mesh.host.n2.beats")
    assert _allowed(n2, "mesh.health.n1.link")
    assert _allowed(n2, "mesh.peers.n3.changes")
    assert not _allowed(n2, "mesh.health.n1.probe")
    assert not _allowed(n2, "mesh.host.n1.beats")
    assert not _allowed(n2, "mesh.discovery.n1.peers")
    assert not _allowed(n2, "mesh.lab.status")


def _keys(*nodes: str) -> dict[str, str]:
    return {node: new_host_key(node).public for node in nodes}


def test_the_generated_authorization_is_current_until_the_contract_changes() -> None:
    text = hub_authorization(_keys("n1", "n2"))
    assert authorization_is_current(text)
    assert set(host_keys_in(text)) == {"n1", "n2"}

    grown = Contract(list(CONTRACT.events), list(CONTRACT.endpoints), list(CONTRACT.buckets))
    grown.event("mesh.raft.{node}.append", NodeRef, "new", publisher=Party.NAMED_HOST)
    assert not authorization_is_current(text, grown)
    assert not authorization_is_current(text.replace("mesh.host.n1.beats", "mesh.host.*.beats"))
    assert not authorization_is_current("")


def test_a_hub_config_with_the_generated_authorization_is_valid_to_nats_server(
    tmp_path: Path,
) -> None:
    creds = generate_credentials(tmp_path / "secrets", ["n1", "n2", "edge_7"])
    conf = tmp_path / "hub.conf"
    security = HubSecurity(
        creds.hub_cert, creds.hub_key, creds.hub_authorization.relative_to(tmp_path)
    )
    conf.write_text(hub_config(ServerPorts(4222, 8222), 7422, tmp_path / "js", security))
    checked = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(conf)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    assert "is valid" in checked.stderr + checked.stdout


def test_credentials_keep_existing_hosts_and_hide_their_secrets(tmp_path: Path) -> None:
    first = generate_credentials(tmp_path, ["n1"])
    n1 = first.host_key("n1")
    again = generate_credentials(tmp_path, ["n1", "n2"])
    assert again.host_key("n1") == n1
    assert again.nodes() == ["n1", "n2"]
    assert set(host_keys_in(again.hub_authorization.read_text())) == {"n1", "n2"}
    for path in again.secret(again.nodes()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert n1.seed.decode() not in repr(n1)
    assert n1.seed.decode() not in again.hub_authorization.read_text()


def test_the_hub_certificate_is_signed_by_the_mesh_ca_for_its_names() -> None:
    ca = new_ca()
    server = issue_server_cert(ca, ["hub.example.net", "127.0.0.1"])
    cert = server.certificate
    cert.verify_directly_issued_by(ca.certificate)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["hub.example.net"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    with pytest.raises(InvalidSignature):
        cert.verify_directly_issued_by(new_ca().certificate)


def test_redaction_masks_seeds_url_passwords_and_private_keys() -> None:
    key = new_host_key("n1")
    seed = key.seed.decode()
    pem = new_ca().key_pem.decode()
    text = f"seed {seed} url nats://leaf:s3cr3t@hub:7422 key {pem} public {key.public}"
    clean = redact(text)
    assert seed not in clean
    assert "s3cr3t" not in clean
    assert "PRIVATE KEY" not in clean
    assert key.public in clean
    assert "nats://leaf:" + MASK + "@hub:7422" in clean


def test_the_log_processor_masks_secret_values_and_secret_fields() -> None:
    seed = new_host_key("n1").seed.decode()
    event = {
        "event": f"connect failed: {seed}",
        "servers": ["nats://u:pw@h:4222"],
        "password": "hunter2",
        "error": ValueError(f"bad {seed}"),
    }
    clean = redact_event(None, "info", event)
    assert seed not in str(clean)
    assert "pw@" not in str(clean)
    assert "hunter2" not in str(clean)


def test_the_deployed_leaf_config_with_a_hosts_generated_files_is_valid_to_nats_server(
    tmp_path: Path,
) -> None:
    creds = generate_credentials(tmp_path / "creds", ["pi-kitchen"])
    etc = tmp_path / "etc"
    (etc / "secrets").mkdir(parents=True)
    for generated, mounted in (
        (creds.host_seed("pi-kitchen"), "seed.conf"),
        (creds.host_authorization("pi-kitchen"), "authorization.conf"),
        (creds.ca_cert, "ca.pem"),
    ):
        (etc / "secrets" / mounted).write_bytes(generated.read_bytes())
    deployed = (REPO / "deploy" / "nats" / "leaf.conf").read_text()
    leaf = etc / "leaf.conf"
    leaf.write_text(deployed.replace("/etc/nats/secrets/ca.pem", str(etc / "secrets" / "ca.pem")))
    env = {**os.environ, "NODE_ID": "pi-kitchen", "HUB_URL": "nats-leaf://hub.example.net:7422"}
    checked = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(leaf)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert checked.returncode == 0, checked.stderr
    local = creds.host_authorization("pi-kitchen").read_text()
    assert '"mesh.health.pi-kitchen.link"' in local
    assert "mesh.health.n1.link" not in local
