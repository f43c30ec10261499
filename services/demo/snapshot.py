"""Read what the demo shows: the funnel from the BI API, pipeline health from the services' metrics."""

import math
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from onefunnel.demo.run import Demo, DemoOptions
from onefunnel.demo.view import Snapshot, StageLine
from onefunnel.ingest.instruments import REGISTRY as INGEST
from onefunnel.shared.stages import Stage
from onefunnel.sync.instruments import REGISTRY as SYNC


async def fetch_snapshot(demo: Demo, options: DemoOptions, *, since: datetime) -> Snapshot:
    headers = {"Authorization": f"Bearer {options.api_token}"}
    async with httpx.AsyncClient(base_url=demo.urls["metrics"], headers=headers, timeout=5.0) as api:
        stages = await _stages(api, since=since)
        campaigns = await _campaigns(api, since=since)
    if "sync" not in demo.urls:  # against a remote stack: its pipeline health is in its own Grafana
        return Snapshot(
            stages=stages, campaigns=campaigns, duplicates_sent=demo.duplicating.duplicated, remote=True
        )
    p50, p99 = (
        _quantile(SYNC, "onefunnel_sync_lag_seconds", 0.5),
        _quantile(SYNC, "onefunnel_sync_lag_seconds", 0.99),
    )
    return Snapshot(
        stages=stages,
        campaigns=campaigns,
        sync_lag_p50=p50,
        sync_lag_p99=p99,
        write_failures=int(_total(SYNC, "onefunnel_sync_write_failures_total")),
        dead_letters=int(
            _total(SYNC, "onefunnel_dead_letters_total") + _total(INGEST, "onefunnel_dead_letters_total")
        ),
        webhooks=int(_total(INGEST, "onefunnel_webhooks_received_total")),
        duplicates_sent=demo.duplicating.duplicated,
    )


def _total(registry: CollectorRegistry, name: str) -> float:
    """The sum of a counter over all its labels."""
    return sum(
        sample.value for metric in registry.collect() for sample in metric.samples if sample.name == name
    )


def _quantile(registry: CollectorRegistry, name: str, q: float) -> float | None:
    """Estimate a quantile of a histogram (all labels together) from its cumulative buckets."""
    buckets: dict[float, float] = {}
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == f"{name}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    total = buckets.get(math.inf, 0.0)
    if not total:
        return None
    for bound in sorted(buckets):
        if buckets[bound] >= q * total:
            return bound if math.isfinite(bound) else max(b for b in buckets if math.isfinite(b))
    return None


async def _funnel_rows(api: httpx.AsyncClient, *, since: datetime, **params: str) -> list[dict[str, Any]]:
    """Every row of GET /v1/funnel for the demo so far, following the cursor."""
    rows: list[dict[str, Any]] = []
    query: dict[str, str] = {
        "from": since.isoformat(),
        "to": datetime.now(UTC).isoformat(),
        "limit": "1000",
        **params,
    }
    while True:
        response = await api.get("/v1/funnel", params=query)
        response.raise_for_status()
        page = response.json()
        rows.extend(page["rows"])
        if not page.get("next_cursor"):
            return rows
        query["cursor"] = page["next_cursor"]


async def _stages(api: httpx.AsyncClient, *, since: datetime) -> dict[Stage, StageLine]:
    return {
        Stage(row["stage"]): StageLine(
            entries=row["entries"],
            rate_from_previous=row["rate_from_previous"],
            rate_from_base=row["rate_from_base"],
        )
        for row in await _funnel_rows(api, since=since)
    }


async def _campaigns(api: httpx.AsyncClient, *, since: datetime) -> dict[str, dict[Stage, int]]:
    campaigns: dict[str, dict[Stage, int]] = {}
    for row in await _funnel_rows(api, since=since, group_by="campaign"):
        if row["group"]:
            campaigns.setdefault(row["group"], {})[Stage(row["stage"])] = row["entries"]
    return campaigns
