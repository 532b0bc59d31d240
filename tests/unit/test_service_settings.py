"""The services' settings, as compose and the lab give them: environment variables."""

from __future__ import annotations

import pytest
from meshmind_discovery._config import DiscoverySettings
from meshmind_health_monitor._config import HealthSettings


def test_discovery_reads_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPABILITIES", "train, gpu,,")
    monkeypatch.setenv("DISCOVERY_TTL_S", "5")
    settings = DiscoverySettings()
    assert settings.capabilities == ["train", "gpu"]
    assert (settings.ttl_s, settings.heartbeat_s) == (5.0, 1.0)


def test_health_monitor_reads_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERFACES", "wlan0,bat0")
    monkeypatch.setenv("PROBE_INTERVAL_S", "0.5")
    monkeypatch.setenv("PROBE_FANOUT", "3")
    settings = HealthSettings()
    assert settings.interfaces == ["wlan0", "bat0"]
    assert (settings.probe_interval_s, settings.timeout_s, settings.probe_fanout) == (0.5, 0.5, 3)


def test_defaults_need_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CAPABILITIES", "INTERFACES", "PROBE_INTERVAL_S"):
        monkeypatch.delenv(name, raising=False)
    assert DiscoverySettings().capabilities == []
    assert HealthSettings().interfaces == []


@pytest.mark.parametrize(
    ("name", "value"),
    [("PROBE_INTERVAL_S", "0"), ("PROBE_FANOUT", "0"), ("PROBE_INTERVAL_S", "soon")],
)
def test_nonsense_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        HealthSettings()
