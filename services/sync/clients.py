"""Build the write-back clients the settings configure, each with its own HTTP connection pool."""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx

from onefunnel.sync.platforms.base import PlatformClient
from onefunnel.sync.platforms.hubspot import HubSpotClient
from onefunnel.sync.platforms.salesforce import SalesforceClient
from onefunnel.sync.platforms.throttle import Throttle
from onefunnel.sync.settings import SyncSettings

TIMEOUT = httpx.Timeout(10.0, connect=5.0)


@asynccontextmanager
async def open_clients(settings: SyncSettings) -> AsyncIterator[list[PlatformClient]]:
    """Yield a client per platform with credentials; close their connections on exit."""
    clients: list[PlatformClient] = []
    async with AsyncExitStack() as stack:
        if settings.hubspot_access_token is not None:
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=TIMEOUT))
            clients.append(
                HubSpotClient(
                    http=http,
                    access_token=settings.hubspot_access_token.get_secret_value(),
                    base_url=settings.hubspot_base_url,
                    throttle=Throttle(
                        per_second=settings.hubspot_requests_per_second, burst=10, concurrency=5
                    ),
                    attempts=settings.write_attempts,
                )
            )
        if settings.salesforce_client_id and settings.salesforce_client_secret is not None:
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=TIMEOUT))
            clients.append(
                SalesforceClient(
                    http=http,
                    client_id=settings.salesforce_client_id,
                    client_secret=settings.salesforce_client_secret.get_secret_value(),
                    login_url=settings.salesforce_login_url,
                    instance_url=settings.salesforce_instance_url,
                    api_version=settings.salesforce_api_version,
                    throttle=Throttle(
                        per_second=settings.salesforce_requests_per_second, burst=10, concurrency=5
                    ),
                    attempts=settings.write_attempts,
                )
            )
        yield clients
