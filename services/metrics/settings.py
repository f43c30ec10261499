from typing import Annotated

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from onefunnel.shared.settings import comma_separated


class MetricsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ONEFUNNEL_", extra="ignore")

    metrics_host: str = Field(default="127.0.0.1", description="Address the metrics service listens on.")
    metrics_port: int = Field(default=8002, ge=1, le=65535, description="Port of the metrics service.")
    metrics_consumer_group: str = Field(
        default="onefunnel-metrics", description="Consumer group of metrics processes."
    )
    metrics_campaigns: Annotated[list[str], NoDecode, BeforeValidator(comma_separated)] = Field(
        default=[],
        description="Campaigns with a Prometheus label of their own; any other counts as `other`.",
    )
    metrics_sla_check_seconds: float = Field(
        default=60.0, gt=0, description="How often SLA breaches are checked."
    )
