"""decision's settings, from environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from meshmind.decision import ActuatorMode, EngineSettings


class DecisionSettings(BaseSettings):
    """Actuators and timing of the loop; every field has an environment variable."""

    model_config = SettingsConfigDict(extra="ignore")

    actuators: ActuatorMode = Field(
        default="dry-run",
        alias="DECISION_ACTUATORS",
        description="lab (the local mesh), dry-run (log the exact command), compose or systemd.",
    )
    vote_timeout_s: float = Field(default=1.0, gt=0, alias="DECISION_VOTE_TIMEOUT_S")
    deadline_s: float = Field(
        default=15.0,
        gt=0,
        alias="DECISION_DEADLINE_S",
        description="How long a detected anomaly is put to the vote before it is given up.",
    )
    settle_s: float = Field(
        default=2.0,
        ge=0,
        alias="DECISION_SETTLE_S",
        description="A link anomaly is planned this long after it is seen.",
    )
    outcome_s: float = Field(
        default=20.0,
        gt=0,
        alias="DECISION_OUTCOME_S",
        description="The anomaly must clear this soon after the action to count as a success.",
    )
    refresh_s: float = Field(
        default=1.0,
        gt=0,
        alias="DECISION_REFRESH_S",
        description="How often the peer list and the consensus group are read again.",
    )
    sweep_retransmit_s: float = Field(
        default=0.2,
        gt=0,
        alias="SWEEP_RETRANSMIT_S",
        description="A sweep message without a receipt is sent again after this long.",
    )
    exclude_ttl_s: float = Field(
        default=600.0,
        gt=0,
        le=86_400,
        alias="DECISION_EXCLUDE_TTL_S",
        description="A trainer excluded for failing rounds is selected again after this long.",
    )
    compose_project: str = Field(default="meshmind", alias="COMPOSE_PROJECT_NAME")
    mesh_interface: str = Field(
        default="wlan0",
        alias="MESH_INTERFACE",
        description="The radio interface reset-interface takes down and up.",
    )
    batman_iface: str = Field(default="bat0", alias="BATMAN_IFACE")

    def engine(self) -> EngineSettings:
        """The loop's timing."""
        return EngineSettings(
            vote_timeout_s=self.vote_timeout_s,
            detect_deadline_s=self.deadline_s,
            settle_s=self.settle_s,
            outcome_s=self.outcome_s,
        )
