"""Settings from the environment; choosing how nats-server runs."""

from __future__ import annotations

import pytest

from meshmind.bus import BusSettings
from meshmind.lab import LocalRunner, pick_runner
from meshmind.lab._servers import docker_engine_answers


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_ID", "pi-kitchen")
    monkeypatch.setenv("NATS_URL", "nats://a:4222, nats://b:4222")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    settings = BusSettings()
    assert settings.node_id == "pi-kitchen"
    assert settings.servers == ["nats://a:4222", "nats://b:4222"]
    assert settings.log_level == "debug"


def test_a_node_id_with_a_dot_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_ID", "n1.evil")
    with pytest.raises(ValueError, match="must match"):
        BusSettings()


def test_local_backend_runs_the_binary() -> None:
    runner = pick_runner("local")
    assert isinstance(runner, LocalRunner)
    assert runner.binary.endswith("nats-server")


def test_auto_backend_falls_back_to_the_binary_without_a_docker_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert docker_engine_answers() is False
    assert isinstance(pick_runner("auto"), LocalRunner)


def test_unknown_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHMIND_NATS_BACKEND", "podman")
    with pytest.raises(ValueError, match="auto, local or docker"):
        pick_runner()
