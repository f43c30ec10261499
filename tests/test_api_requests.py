"""The APIs people and BI tools call are counted and timed by route template and status."""

from collections.abc import Callable
from pathlib import Path

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from onefunnel.metrics import instruments as metrics_instruments
from onefunnel.metrics.app import create_app as create_metrics_app
from onefunnel.metrics.settings import MetricsSettings
from onefunnel.shared.api_requests import ApiRequestMetrics, api_instruments
from onefunnel.shared.bus.local import LocalBus
from onefunnel.shared.database import create_engine
from onefunnel.shared.funnel import load_funnel
from onefunnel.shared.settings import DatabaseSettings, TopicSettings
from onefunnel.sync import instruments as sync_instruments
from onefunnel.sync.app import create_app as create_sync_app


def counted(registry: CollectorRegistry) -> Callable[[str, str], float]:
    def count(route: str, status: str) -> float:
        labels = {"route": route, "status": status}
        return registry.get_sample_value("onefunnel_api_requests_total", labels) or 0.0

    return count


async def test_requests_are_counted_by_route_template_status_and_time() -> None:
    registry = CollectorRegistry()
    requests, seconds = api_instruments(registry)
    app = FastAPI()

    @app.get("/v1/campaigns/{campaign}")
    async def campaign(campaign: str) -> dict[str, str]:
        return {"campaign": campaign}

    @app.get("/v1/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    app.add_middleware(ApiRequestMetrics, api=app, requests=requests, seconds=seconds)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        for name in ("spring", "autumn", "winter"):
            assert (await client.get(f"/v1/campaigns/{name}")).status_code == 200
        assert (await client.get("/v1/no-such-thing")).status_code == 404
        assert (await client.get("/v1/broken")).status_code == 500

    count = counted(registry)
    assert count("/v1/campaigns/{campaign}", "200") == 3
    assert count("other", "404") == 1
    assert count("/v1/broken", "500") == 1
    route = {"route": "/v1/campaigns/{campaign}"}
    assert registry.get_sample_value("onefunnel_api_request_duration_seconds_count", route) == 3


async def test_the_bi_api_and_the_sync_failures_api_are_counted(tmp_path: Path) -> None:
    engine = create_engine(DatabaseSettings(database_url=f"sqlite:///{tmp_path}/api.sqlite3"))
    bus, topics, funnel = LocalBus(path=tmp_path / "bus.sqlite3"), TopicSettings(), load_funnel()
    metrics = create_metrics_app(
        bus=bus, engine=engine, topics=topics, settings=MetricsSettings(), funnel=funnel, api_tokens=["t"]
    )
    sync = create_sync_app(
        bus=bus, engine=engine, topics=topics, funnel=funnel, clients=[], consumer_group="g", api_tokens=["t"]
    )
    counts = [
        (metrics, counted(metrics_instruments.REGISTRY), "/v1/funnel"),
        (sync, counted(sync_instruments.REGISTRY), "/v1/sync/failures"),
    ]
    for app, count, path in counts:
        before = count(path, "401")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            assert (await client.get(path)).status_code == 401  # no token
            assert (await client.get("/healthz")).status_code == 200  # an operations endpoint: not counted

        assert count(path, "401") == before + 1
        assert count("/healthz", "200") == count("other", "200") == 0
    await engine.dispose()
