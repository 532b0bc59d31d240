"""discovery's settings, from environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from meshmind.bus import CommaList


class DiscoverySettings(BaseSettings):
    """Heartbeat and expiry of membership; every field has an environment variable."""

    model_config = SettingsConfigDict(extra="ignore")

    heartbeat_s: float = Field(
        default=1.0,
        gt=0,
        alias="DISCOVERY_HEARTBEAT_S",
        description="How often this host announces itself.",
    )
    ttl_s: float = Field(
        default=3.0, gt=0, alias="DISCOVERY_TTL_S", description="A host silent this long has left."
    )
    capabilities: CommaList = Field(
        default_factory=list,
        alias="CAPABILITIES",
        description="What this host can do, comma-separated.",
    )
