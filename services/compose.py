"""Compose the services into endpoints: the one place that knows all three (they never import each other)."""

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from onefunnel.ingest.app import create_app as create_ingest_app
from onefunnel.ingest.settings import IngestSettings
from onefunnel.metrics.app import create_app as create_metrics_app
from onefunnel.metrics.settings import MetricsSettings
from onefunnel.serving import Endpoint
from onefunnel.shared.bus import Bus
from onefunnel.shared.funnel import Funnel
from onefunnel.shared.settings import TopicSettings
from onefunnel.sync.app import create_app as create_sync_app
from onefunnel.sync.platforms.base import PlatformClient
from onefunnel.sync.settings import SyncSettings


@dataclass(frozen=True)
class Services:
    """Everything the services share, and each one's own settings."""

    bus: Bus
    engine: AsyncEngine
    topics: TopicSettings
    funnel: Funnel
    ingest: IngestSettings
    sync: SyncSettings
    metrics: MetricsSettings
    api_tokens: Sequence[str]


def endpoints(
    services: Services, *, names: Sequence[str], clients: Sequence[PlatformClient]
) -> list[Endpoint]:
    """Build the apps named in `names` (ingest, sync, metrics) on their configured addresses."""
    s = services
    built = []
    if "ingest" in names:
        app = create_ingest_app(bus=s.bus, settings=s.ingest, topics=s.topics, mapping=s.funnel.stage_mapping)
        built.append(Endpoint("ingest", app, s.ingest.ingest_host, s.ingest.ingest_port))
    if "sync" in names:
        app = create_sync_app(
            bus=s.bus,
            engine=s.engine,
            topics=s.topics,
            funnel=s.funnel,
            clients=clients,
            consumer_group=s.sync.sync_consumer_group,
            api_tokens=s.api_tokens,
            propagate_deletes=s.sync.delete_policy == "propagate",
        )
        built.append(Endpoint("sync", app, s.sync.sync_host, s.sync.sync_port))
    if "metrics" in names:
        app = create_metrics_app(
            bus=s.bus,
            engine=s.engine,
            topics=s.topics,
            settings=s.metrics,
            funnel=s.funnel,
            api_tokens=s.api_tokens,
        )
        built.append(Endpoint("metrics", app, s.metrics.metrics_host, s.metrics.metrics_port))
    return built
