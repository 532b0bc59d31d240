"""fl-coordinator's settings, from environment variables."""

from __future__ import annotations

from pydantic import Field

from meshmind.federation import FlHostSettings


class CoordinatorSettings(FlHostSettings):
    """Leases, standby checks and trainer selection; the host's data is for evaluation."""

    lease_ttl_s: float = Field(
        default=6.0,
        gt=0,
        alias="FL_LEASE_TTL_S",
        description="A job's coordinator lease lasts this long unless renewed.",
    )
    renew_s: float = Field(
        default=1.5, gt=0, alias="FL_LEASE_RENEW_S", description="How often the lease is renewed."
    )
    standby_check_s: float = Field(
        default=2.0,
        gt=0,
        alias="FL_STANDBY_CHECK_S",
        description="How often a standby tries to take over the jobs nobody holds.",
    )
    capability: str = Field(
        default="train", alias="FL_CAPABILITY", description="What a host must offer to train."
    )
