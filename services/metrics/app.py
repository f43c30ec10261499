import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from onefunnel.metrics.api.router import bi_router
from onefunnel.metrics.consumer import run_counter
from onefunnel.metrics.instruments import API_REQUESTS, API_SECONDS, REGISTRY
from onefunnel.metrics.settings import MetricsSettings
from onefunnel.metrics.sla import run_sla_checks
from onefunnel.shared.api_auth import bearer_auth
from onefunnel.shared.api_requests import ApiRequestMetrics
from onefunnel.shared.bus import Bus
from onefunnel.shared.database import database_ready, migrate
from onefunnel.shared.funnel import Funnel
from onefunnel.shared.ops import ops_router
from onefunnel.shared.settings import TopicSettings
from onefunnel.shared.supervise import keep_running


def create_app(
    *,
    bus: Bus,
    engine: AsyncEngine,
    topics: TopicSettings,
    settings: MetricsSettings,
    funnel: Funnel,
    api_tokens: Sequence[str],
) -> FastAPI:
    """Build the metrics ASGI app; the caller owns the bus and the engine."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await migrate(engine, service="metrics")
        counter = asyncio.create_task(
            keep_running(
                "metrics counter",
                lambda: run_counter(
                    bus=bus,
                    topics=topics,
                    group=settings.metrics_consumer_group,
                    sessions=sessions,
                    campaigns=frozenset(settings.metrics_campaigns),
                ),
            )
        )
        checks = asyncio.create_task(
            keep_running(
                "sla checks",
                lambda: run_sla_checks(
                    sessions=sessions,
                    sla=funnel.sla,
                    every=settings.metrics_sla_check_seconds,
                ),
            )
        )
        try:
            yield
        finally:
            for task in (counter, checks):
                task.cancel()
            await asyncio.gather(counter, checks, return_exceptions=True)

    app = FastAPI(
        title="onefunnel metrics",
        version="1",
        lifespan=lifespan,
        summary="Stage-conversion counters for Prometheus and the funnel API for BI tools.",
    )
    app.include_router(
        ops_router(registry=REGISTRY, checks={"bus": bus.ready, "database": lambda: database_ready(engine)})
    )
    app.include_router(bi_router(sessions=sessions, auth=bearer_auth(api_tokens)))
    app.add_middleware(ApiRequestMetrics, api=app, requests=API_REQUESTS, seconds=API_SECONDS)
    return app
