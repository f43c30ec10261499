from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from onefunnel.shared.settings import comma_separated

# Several values at once, so a secret can be rotated without downtime: add the new one, switch the
# platform over, remove the old one.
Secrets = Annotated[list[SecretStr], NoDecode, BeforeValidator(comma_separated)]
Values = Annotated[list[str], NoDecode, BeforeValidator(comma_separated)]


class IngestSettings(BaseSettings):
    """The ingest service. A source whose secret is not set is disabled: its endpoint answers 404."""

    model_config = SettingsConfigDict(env_prefix="ONEFUNNEL_", extra="ignore")

    ingest_host: str = Field(default="127.0.0.1", description="Address the ingest service listens on.")
    ingest_port: int = Field(default=8000, ge=1, le=65535, description="Port of the ingest service.")
    public_base_url: str | None = Field(
        default=None,
        description="The URL platforms call, e.g. `https://hooks.example.com` behind a proxy; "
        "HubSpot signs it. Default: the URL of each request.",
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest webhook body accepted.")
    max_json_depth: int = Field(default=32, ge=2, description="Deepest JSON nesting accepted.")
    recent_keys: int = Field(
        default=100_000,
        ge=0,
        description="Idempotency keys remembered per process to drop redeliveries early.",
    )
    hubspot_client_secret: Secrets = Field(default=[], description="HubSpot app client secret(s).")
    hubspot_accept_legacy_signatures: bool = Field(
        default=False, description="Also accept HubSpot v1/v2 signatures (no timestamp, no replay window)."
    )
    mautic_webhook_secret: Secrets = Field(default=[], description="Mautic webhook secret(s).")
    salesforce_org_ids: Values = Field(default=[], description="Salesforce organization ids accepted.")
    salesforce_outbound_token: Secrets = Field(
        default=[], description="Token(s) required as `?token=` on Outbound Message URLs (optional)."
    )
    salesforce_webhook_secret: Secrets = Field(
        default=[], description="HMAC secret(s) of Flow/Apex JSON callouts (`X-Onefunnel-Signature`)."
    )
    marketo_webhook_token: Secrets = Field(
        default=[], description="Token(s) Marketo sends in `X-Onefunnel-Token` or `?token=`."
    )
    marketo_time_zone: str = Field(
        default="UTC",
        description="IANA time zone of the Marketo subscription; `{{system.dateTime}}` is in it.",
    )
    pipedrive_basic_auth: Secrets = Field(
        default=[], description="`user:password` pair(s) of Pipedrive's Basic auth."
    )
    generic_webhook_secret: Secrets = Field(
        default=[], description="Standard Webhooks secret(s), `whsec_...`."
    )

    @field_validator("marketo_time_zone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not an IANA time zone name") from None
        return name

    @field_validator("pipedrive_basic_auth")
    @classmethod
    def _user_and_password(cls, pairs: list[SecretStr]) -> list[SecretStr]:
        if any(":" not in pair.get_secret_value() for pair in pairs):
            raise ValueError("each value must be user:password")
        return pairs

    @field_validator("generic_webhook_secret")
    @classmethod
    def _whsec(cls, secrets: list[SecretStr]) -> list[SecretStr]:
        if any(not secret.get_secret_value().startswith("whsec_") for secret in secrets):
            raise ValueError("each secret must start with whsec_")
        return secrets
