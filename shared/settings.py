"""Configuration every service shares, read from `ONEFUNNEL_*` environment variables.

Each concern has its own Settings class; a service builds the ones it needs in its entry point
and passes them down. Nothing reads the environment anywhere else.
"""

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_CONFIG = SettingsConfigDict(env_prefix="ONEFUNNEL_", extra="ignore")


def comma_separated(value: object) -> object:
    """Read `a,b,c` from the environment as a list (secrets are rotated by listing two at once)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class BusKind(StrEnum):
    KAFKA = "kafka"
    LOCAL = "local"


class BusSettings(BaseSettings):
    model_config = _CONFIG

    bus: BusKind = Field(
        default=BusKind.LOCAL, description="`kafka`, or `local` for the embedded SQLite log."
    )
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Kafka brokers, comma separated."
    )
    kafka_client_id: str = Field(default="onefunnel", description="Client id the brokers see.")
    kafka_partitions: int = Field(default=6, ge=1, description="Partitions of topics onefunnel creates.")
    kafka_replication_factor: int = Field(
        default=1, ge=1, description="Replication of topics onefunnel creates."
    )
    publish_timeout: float = Field(
        default=3.0, gt=0, description="Seconds a publish may wait for the broker's acknowledgement."
    )
    kafka_max_message_bytes: int = Field(
        default=4_194_304,
        ge=65_536,
        description="Largest message onefunnel publishes (the producer's max request size and the "
        "`max.message.bytes` of the topics it creates). Must exceed ONEFUNNEL_MAX_BODY_BYTES by "
        "64 KiB, so that any webhook body the ingest accepts fits, events and dead letters alike.",
    )
    local_bus_path: Path = Field(
        default=Path(".onefunnel/bus.sqlite3"),
        description="File of the embedded log (`ONEFUNNEL_BUS=local`).",
    )


class TopicSettings(BaseSettings):
    model_config = _CONFIG

    topic_source_events: str = Field(
        default="onefunnel.source-events.v1", description="Normalized webhook events."
    )
    topic_stage_changes: str = Field(
        default="onefunnel.lead-stage-changes.v1", description="Canonical transitions."
    )
    topic_dead_letters: str = Field(
        default="onefunnel.dead-letters.v1", description="What could not be processed."
    )

    @property
    def all(self) -> list[str]:
        return [self.topic_source_events, self.topic_stage_changes, self.topic_dead_letters]


class DatabaseSettings(BaseSettings):
    model_config = _CONFIG

    database_url: str = Field(
        default="sqlite+aiosqlite:///.onefunnel/onefunnel.sqlite3",
        description="SQLAlchemy URL; `postgresql://` URLs use asyncpg.",
    )

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, url: str) -> str:
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(plain):
                return driver + url.removeprefix(plain)
        if not url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("must be a postgresql:// or sqlite:// URL")
        return url


class LogSettings(BaseSettings):
    model_config = _CONFIG

    log_level: str = Field(
        default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$", description="DEBUG, INFO, WARNING or ERROR."
    )
    log_format: str = Field(default="json", pattern="^(json|text)$", description="`json` or `text`.")


class FunnelSettings(BaseSettings):
    model_config = _CONFIG

    funnel_file: Path | None = Field(
        default=None, description="Funnel definition (YAML); the default ships in shared/funnel.yaml."
    )


class ApiSettings(BaseSettings):
    model_config = _CONFIG

    api_tokens: Annotated[list[SecretStr], NoDecode, BeforeValidator(comma_separated)] = Field(
        default=[], description="Bearer tokens of the read-only APIs (BI, sync failures), comma separated."
    )
