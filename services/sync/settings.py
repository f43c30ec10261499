from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class SyncSettings(BaseSettings):
    """The sync service. A platform without credentials is not written to (its events still count)."""

    model_config = SettingsConfigDict(env_prefix="ONEFUNNEL_", extra="ignore")

    sync_host: str = Field(default="127.0.0.1", description="Address the sync service listens on.")
    sync_port: int = Field(default=8001, ge=1, le=65535, description="Port of the sync service.")
    sync_consumer_group: str = Field(
        default="onefunnel-sync", description="Consumer group of sync processes."
    )
    delete_policy: Literal["unlink", "propagate"] = Field(
        default="unlink",
        description="A record deleted in one system: `unlink` it, or `propagate` the delete to the other.",
    )
    write_attempts: int = Field(
        default=5, ge=1, description="Tries of one write-back call before it waits its turn again."
    )
    hubspot_access_token: SecretStr | None = Field(
        default=None, description="HubSpot private app access token."
    )
    hubspot_base_url: str = Field(default="https://api.hubapi.com", description="HubSpot API base URL.")
    hubspot_requests_per_second: float = Field(
        default=9.0, gt=0, description="Client-side limit under HubSpot's 100 requests per 10 s."
    )
    salesforce_client_id: str | None = Field(
        default=None, description="Salesforce connected app consumer key."
    )
    salesforce_client_secret: SecretStr | None = Field(
        default=None, description="Salesforce connected app secret."
    )
    salesforce_login_url: str = Field(
        default="https://login.salesforce.com", description="Where tokens are issued: your My Domain URL."
    )
    salesforce_instance_url: str | None = Field(
        default=None, description="Salesforce instance URL; default: the one the token answer names."
    )
    salesforce_api_version: str = Field(
        default="62.0", pattern=r"^\d+\.0$", description="Salesforce REST API version, e.g. 62.0."
    )
    salesforce_requests_per_second: float = Field(
        default=10.0, gt=0, description="Client-side limit for Salesforce."
    )
