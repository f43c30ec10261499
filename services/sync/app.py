import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from onefunnel.shared.api_auth import bearer_auth
from onefunnel.shared.api_requests import ApiRequestMetrics
from onefunnel.shared.bus import Bus
from onefunnel.shared.database import database_ready, migrate
from onefunnel.shared.funnel import Funnel
from onefunnel.shared.ops import ReadinessCheck, ops_router
from onefunnel.shared.settings import TopicSettings
from onefunnel.shared.supervise import keep_running
from onefunnel.sync.api import failures_router
from onefunnel.sync.consumer import run_consumer
from onefunnel.sync.handler import Rules
from onefunnel.sync.instruments import API_REQUESTS, API_SECONDS, REGISTRY
from onefunnel.sync.outbox import run_relay
from onefunnel.sync.platforms.base import PlatformClient
from onefunnel.sync.writer import WriteBack


def create_app(
    *,
    bus: Bus,
    engine: AsyncEngine,
    topics: TopicSettings,
    funnel: Funnel,
    clients: Sequence[PlatformClient],
    consumer_group: str,
    api_tokens: Sequence[str],
    propagate_deletes: bool = False,
) -> FastAPI:
    """Build the sync ASGI app; the caller owns the bus, the engine and the platform clients."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    rules = Rules(
        funnel=funnel,
        writable={client.system: client.object_type for client in clients},
        propagate_deletes=propagate_deletes,
    )
    relay_wake = asyncio.Event()
    writers = [(WriteBack(client=client, sessions=sessions), asyncio.Event()) for client in clients]

    def changed() -> None:
        relay_wake.set()
        for _, wake in writers:
            wake.set()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await migrate(engine, service="sync")
        loops = [
            keep_running(
                "sync consumer",
                lambda: run_consumer(
                    bus=bus,
                    topics=topics,
                    group=consumer_group,
                    sessions=sessions,
                    rules=rules,
                    on_change=changed,
                ),
            ),
            keep_running(
                "outbox relay", lambda: run_relay(bus=bus, topics=topics, sessions=sessions, wake=relay_wake)
            ),
            *(keep_running(f"{writer.system} writer", partial(writer.run, wake)) for writer, wake in writers),
        ]
        tasks = [asyncio.create_task(loop) for loop in loops]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    checks: dict[str, ReadinessCheck] = {"bus": bus.ready, "database": lambda: database_ready(engine)}
    checks.update({client.system.value: client.ready for client in clients})
    app = FastAPI(
        title="onefunnel sync",
        version="1",
        lifespan=lifespan,
        summary="One canonical lifecycle per lead, reconciled across CRM and marketing automation.",
    )
    app.include_router(ops_router(registry=REGISTRY, checks=checks))
    app.include_router(failures_router(sessions=sessions, auth=bearer_auth(api_tokens)))
    app.add_middleware(ApiRequestMetrics, api=app, requests=API_REQUESTS, seconds=API_SECONDS)
    return app
