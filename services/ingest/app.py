from fastapi import FastAPI
from onefunnel.ingest.instruments import REGISTRY
from onefunnel.shared.bus import Bus
from onefunnel.shared.ops import ops_router


def create_app(*, bus: Bus) -> FastAPI:
    """Build the ingest ASGI app; the caller owns the bus."""
    app = FastAPI(title="onefunnel ingest", version="1", summary="Platform webhooks in, events on the bus.")
    app.include_router(ops_router(registry=REGISTRY, checks={"bus": bus.ready}))
    return app
