"""Bus settings read from environment variables."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

NODE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")

INBOX_PREFIX = "_INBOX"
"""Replies to a host come to ``_INBOX.<node id>.…``: its permissions let it read only those."""


def check_node_id(value: str) -> str:
    """Return ``value`` if it is a valid node id, else raise ``ValueError``."""
    if not NODE_ID_PATTERN.fullmatch(value):
        raise ValueError(f"node id {value!r} must match [A-Za-z0-9_-]+ (no dots, no wildcards)")
    return value


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]
"""A list setting given in the environment as ``a,b,c``."""


class BusSettings(BaseSettings):
    """How a process joins the mesh bus; every field has an environment variable of its name."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    node_id: str = Field(default="local", description="This host's id in the mesh (NODE_ID).")
    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        description="The local leaf nats-server (NATS_URL); comma-separated for several.",
    )
    hub_domain: str = Field(default="hub", description="JetStream domain of the hub (HUB_DOMAIN).")
    hub_replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        description="Replicas of the mesh's buckets (HUB_REPLICAS): 3 with a 3-server hub.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level (LOG_LEVEL)."
    )
    log_format: Literal["json", "console"] = Field(
        default="json", description="JSON lines for services, console for people (LOG_FORMAT)."
    )
    max_payload: int = Field(
        default=1024 * 1024,
        description="Largest message body accepted, in bytes (MAX_PAYLOAD); NATS' default.",
    )
    otel_sdk_disabled: bool = Field(
        default=False, description="OTEL_SDK_DISABLED: true exports no spans whatever else is set."
    )
    otel_traces_exporter: CommaList = Field(
        default_factory=list,
        description=(
            "OTEL_TRACES_EXPORTER: comma-separated otlp, console (JSON lines on stderr), none; "
            "by default otlp when an OTLP endpoint is set, else none."
        ),
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, description="OTEL_EXPORTER_OTLP_ENDPOINT: the collector's OTLP/HTTP base URL."
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None,
        description="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: the collector's full URL for traces.",
    )
    drain_timeout_s: float = Field(default=10.0, description="Drain budget on SIGTERM (s).")
    nats_pending_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=1,
        description=(
            "Outbound bytes buffered while reconnecting (NATS_PENDING_BYTES); once full, sends "
            "fail with Disconnected until the connection is back."
        ),
    )

    @field_validator("node_id")
    @classmethod
    def _valid_node_id(cls, value: str) -> str:
        return check_node_id(value)

    @field_validator("otel_traces_exporter")
    @classmethod
    def _lower_exporters(cls, value: list[str]) -> list[str]:
        return [name.lower() for name in value]

    @property
    def otlp_endpoint_set(self) -> bool:
        """Whether an OTLP endpoint is configured, for all signals or for traces."""
        return bool(self.otel_exporter_otlp_endpoint or self.otel_exporter_otlp_traces_endpoint)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def servers(self) -> list[str]:
        """The NATS URLs to try, in order."""
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]
