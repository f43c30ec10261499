from fastapi import FastAPI

from onefunnel.ingest.instruments import REGISTRY
from onefunnel.ingest.recent_keys import RecentKeys
from onefunnel.ingest.request_ids import RequestIdMiddleware
from onefunnel.ingest.settings import IngestSettings
from onefunnel.ingest.sources import build_sources
from onefunnel.ingest.webhooks import WebhookReceiver, webhook_router
from onefunnel.shared.bus import Bus
from onefunnel.shared.ops import ops_router
from onefunnel.shared.settings import TopicSettings
from onefunnel.shared.stage_mapping import StageMapping


def create_app(
    *, bus: Bus, settings: IngestSettings, topics: TopicSettings, mapping: StageMapping
) -> FastAPI:
    """Build the ingest ASGI app; the caller owns the bus."""
    app = FastAPI(
        title="onefunnel ingest",
        version="1",
        summary="Platform webhooks in, verified and normalized; events out on the bus.",
    )
    receiver = WebhookReceiver(
        bus=bus,
        topics=topics,
        sources=build_sources(settings),
        mapping=mapping,
        public_base_url=settings.public_base_url,
        max_body_bytes=settings.max_body_bytes,
        max_json_depth=settings.max_json_depth,
        recent=RecentKeys(capacity=settings.recent_keys),
    )
    app.include_router(webhook_router(receiver))
    app.include_router(ops_router(registry=REGISTRY, checks={"bus": bus.ready}))
    app.add_middleware(RequestIdMiddleware)
    return app
