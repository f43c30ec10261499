from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SyncSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ONEFUNNEL_", extra="ignore")

    sync_host: str = Field(default="127.0.0.1", description="Address the sync service listens on.")
    sync_port: int = Field(default=8001, ge=1, le=65535, description="Port of the sync service.")
