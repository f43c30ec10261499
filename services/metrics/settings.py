from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MetricsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ONEFUNNEL_", extra="ignore")

    metrics_host: str = Field(default="127.0.0.1", description="Address the metrics service listens on.")
    metrics_port: int = Field(default=8002, ge=1, le=65535, description="Port of the metrics service.")
