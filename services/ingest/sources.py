"""Build the platform adapters the settings enable; a source without a secret stays disabled."""

from zoneinfo import ZoneInfo

from pydantic import SecretStr

from onefunnel.ingest.platforms.base import Platform
from onefunnel.ingest.platforms.hubspot import HubSpot
from onefunnel.ingest.platforms.marketo import Marketo
from onefunnel.ingest.platforms.mautic import Mautic
from onefunnel.ingest.platforms.pipedrive import Pipedrive
from onefunnel.ingest.platforms.salesforce import Salesforce
from onefunnel.ingest.platforms.standard_webhooks import StandardWebhooks
from onefunnel.ingest.settings import IngestSettings
from onefunnel.shared.events import SourceSystem


def build_sources(settings: IngestSettings) -> dict[SourceSystem, Platform]:
    """Return the enabled sources by name."""

    def plain(secrets: list[SecretStr]) -> list[str]:
        return [secret.get_secret_value() for secret in secrets]

    sources: dict[SourceSystem, Platform] = {}
    if settings.hubspot_client_secret:
        sources[SourceSystem.HUBSPOT] = HubSpot(
            client_secrets=plain(settings.hubspot_client_secret),
            accept_legacy_signatures=settings.hubspot_accept_legacy_signatures,
        )
    if settings.salesforce_org_ids or settings.salesforce_webhook_secret:
        sources[SourceSystem.SALESFORCE] = Salesforce(
            org_ids=settings.salesforce_org_ids,
            outbound_tokens=plain(settings.salesforce_outbound_token),
            callout_secrets=plain(settings.salesforce_webhook_secret),
        )
    if settings.marketo_webhook_token:
        sources[SourceSystem.MARKETO] = Marketo(
            tokens=plain(settings.marketo_webhook_token), time_zone=ZoneInfo(settings.marketo_time_zone)
        )
    if settings.mautic_webhook_secret:
        sources[SourceSystem.MAUTIC] = Mautic(secrets=plain(settings.mautic_webhook_secret))
    if settings.pipedrive_basic_auth:
        sources[SourceSystem.PIPEDRIVE] = Pipedrive(credentials=plain(settings.pipedrive_basic_auth))
    if settings.generic_webhook_secret:
        sources[SourceSystem.GENERIC] = StandardWebhooks(secrets=plain(settings.generic_webhook_secret))
    return sources
