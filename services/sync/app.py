from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from onefunnel.shared.bus import Bus
from onefunnel.shared.database import database_ready, migrate
from onefunnel.shared.ops import ops_router
from onefunnel.sync.instruments import REGISTRY


def create_app(*, bus: Bus, engine: AsyncEngine) -> FastAPI:
    """Build the sync ASGI app; the caller owns the bus and the engine."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await migrate(engine, service="sync")
        yield

    app = FastAPI(title="onefunnel sync", version="1", lifespan=lifespan)
    app.include_router(
        ops_router(registry=REGISTRY, checks={"bus": bus.ready, "database": lambda: database_ready(engine)})
    )
    return app
