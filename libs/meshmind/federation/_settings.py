"""Where a host's federated-learning data is, from environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from meshmind.federation._hosts import HostData, host_data


class FlHostSettings(BaseSettings):
    """The host's data for federated tasks; shared by its trainer and its coordinator."""

    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True)

    data_dir: Path | None = Field(
        default=None,
        alias="FL_DATA_DIR",
        description="The host's labelled text (*.jsonl, *.csv) for the minilm-text task.",
    )
    node_index: int | None = Field(
        default=None,
        ge=0,
        alias="FL_NODE_INDEX",
        description="This host's share of a packaged data set (default: from its id, n3 -> 2).",
    )
    nodes: int = Field(
        default=1, ge=1, alias="FL_NODES", description="How many hosts share a packaged data set."
    )

    def host_data(self, node_id: str) -> HostData:
        """The host's data source."""
        return host_data(
            node_id, node_index=self.node_index, nodes=self.nodes, data_dir=self.data_dir
        )
