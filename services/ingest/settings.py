from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ONEFUNNEL_", extra="ignore")

    ingest_host: str = Field(default="127.0.0.1", description="Address the ingest service listens on.")
    ingest_port: int = Field(default=8000, ge=1, le=65535, description="Port of the ingest service.")
