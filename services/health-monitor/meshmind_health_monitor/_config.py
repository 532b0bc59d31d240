"""health-monitor's settings, from environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from meshmind.bus import CommaList
from meshmind.health import links_ttl_s


class HealthSettings(BaseSettings):
    """Probing and reporting; every field has an environment variable."""

    model_config = SettingsConfigDict(extra="ignore")

    probe_interval_s: float = Field(
        default=1.0, gt=0, alias="PROBE_INTERVAL_S", description="How often each link is probed."
    )
    probe_timeout_s: float | None = Field(
        default=None,
        gt=0,
        alias="PROBE_TIMEOUT_S",
        description="A probe unanswered this long is lost (default: the interval).",
    )
    probe_fanout: int = Field(
        default=8,
        ge=1,
        alias="PROBE_FANOUT",
        description="At most this many peers probed per interval.",
    )
    peer_linger_s: float = Field(
        default=10.0,
        ge=0,
        alias="PEER_LINGER_S",
        description="Keep probing a peer this long after it left.",
    )
    report_every_s: float = Field(
        default=5.0,
        gt=0,
        alias="LINK_REPORT_EVERY_S",
        description="Refresh the mesh-links bucket this often.",
    )
    store_timeout_s: float = Field(
        default=10.0,
        gt=0,
        alias="LINK_STORE_TIMEOUT_S",
        description="A put to mesh-links may take this long before it is retried.",
    )
    interfaces: CommaList = Field(
        default_factory=list, alias="INTERFACES", description="Interfaces to watch (default: all)."
    )
    batman_iface: str = Field(
        default="bat0", alias="BATMAN_IFACE", description="The batman-adv mesh interface."
    )

    @property
    def timeout_s(self) -> float:
        """The probe timeout in force."""
        return self.probe_timeout_s or self.probe_interval_s

    @property
    def links_ttl_s(self) -> float:
        """The mesh-links TTL that follows from the report interval and the store timeout."""
        return links_ttl_s(self.report_every_s, self.store_timeout_s)
