"""consensus' settings, from environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from meshmind.bus import CommaList


class ConsensusSettings(BaseSettings):
    """Backend, initial cluster, storage and timing; every field has an environment variable."""

    model_config = SettingsConfigDict(extra="ignore")

    backend: Literal["raft", "jetstream"] = Field(
        default="raft",
        alias="CONSENSUS_BACKEND",
        description="raft: among the hosts; jetstream: the hub's JetStream.",
    )
    peers: CommaList = Field(
        default_factory=list,
        alias="CONSENSUS_PEERS",
        description="The initial cluster (raft): every host's id, comma-separated, the same on "
        "every host. Needed for raft on first start; afterwards the log holds the membership.",
    )
    data_dir: Path = Field(
        default=Path("/var/lib/meshmind"),
        alias="DATA_DIR",
        description="Where the Raft log lives, in <DATA_DIR>/<NODE_ID>.",
    )
    tick_s: float = Field(default=0.1, gt=0, alias="CONSENSUS_TICK_S")
    election_ticks: int = Field(
        default=10,
        ge=3,
        alias="CONSENSUS_ELECTION_TICKS",
        description="Ticks without a leader before an election (randomised up to twice this).",
    )
    snapshot_every: int = Field(default=1000, ge=10, alias="CONSENSUS_SNAPSHOT_EVERY")
    lease_tick_s: float = Field(
        default=1.0,
        gt=0,
        alias="CONSENSUS_LEASE_TICK_S",
        description="How often the leader commits its time, so expired leases are seen to expire.",
    )
    balance_every_s: float = Field(
        default=2.0,
        ge=0,
        alias="CONSENSUS_BALANCE_EVERY_S",
        description="How often the raft leader re-balances voters and learners from "
        "discovery's peers and the mesh-links bucket (0: never).",
    )
    member_grace_s: float = Field(
        default=120.0,
        gt=0,
        alias="CONSENSUS_MEMBER_GRACE_S",
        description="How long a member may be missing from discovery's peers before the "
        "leader removes it from the group.",
    )
    forward_wait_s: float = Field(
        default=5.0,
        gt=0,
        alias="CONSENSUS_FORWARD_WAIT_S",
        description="How long a request waits for a leader to exist and answer when forwarded.",
    )
