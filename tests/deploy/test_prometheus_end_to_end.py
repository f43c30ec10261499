"""A real Prometheus scrapes the metrics service while a scenario moves the funnel, and every PromQL
expression deploy/ ships is evaluated through Prometheus' HTTP API.

The metrics service runs in this process (uvicorn, embedded bus, SQLite) on the port the session's
Prometheus scrapes every second; the rules of deploy/prometheus/rules/ are evaluated every second.

Exact numbers and increase(). increase() extrapolates from the samples it has to the edges of its
window, so a plain increase over a few seconds of data is only approximately the number of events;
those values are asserted within the extrapolation's bound. The scenario is shaped so the shipped
ratios are exact all the same: a warm-up is counted before Prometheus' first scrape, so every
counter the ratios read starts at least as high as it then grows, and Prometheus extrapolates each
of them by the same factor (half a scrape interval at the start, the same distance to the end),
which cancels in a ratio, a mean or a quantile. Raw counters are compared exactly, as the
difference between two instants. The instruments' registries are shared by the whole test
session, so every expected number is a difference or comes from this test's own database.
"""

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from onefunnel.metrics import instruments
from onefunnel.metrics.app import create_app
from onefunnel.metrics.settings import MetricsSettings
from onefunnel.shared import envelope
from onefunnel.shared.bus import OutgoingMessage, open_bus
from onefunnel.shared.database import create_engine
from onefunnel.shared.events import Attribution, Cause, LeadStageChanged, SourceEventType, SourceSystem
from onefunnel.shared.funnel import load_funnel
from onefunnel.shared.settings import BusKind, BusSettings, DatabaseSettings, TopicSettings
from onefunnel.shared.stages import Stage
from tests.deploy.conftest import (
    METRICS_JOB,
    Expression,
    PrometheusServer,
    dashboard_expressions,
    dashboard_variable_queries,
    recording_rules,
    rule_expressions,
    rules,
    source_metrics,
)
from tests.deploy.conftest import (
    instruments as known_instruments,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

FUNNEL = load_funnel()
WAIT_SECONDS = 60.0
SCRAPES_BEFORE = 5  # S >= 5 scrape intervals bounds increase()'s extrapolation by (5 + 0.5 + 1.1) / 5
EXTRAPOLATION_BOUND = 1.35
# What Grafana would put in; $campaign is the "All" value of the funnel dashboard's variable.
GRAFANA_VALUES = {"$__rate_interval": "1m", "$__range": "1h", "$campaign": ".*"}

# The scenario: the same walk for the warm-up leads and for 4 of the main ones.
WALK = ((Stage.MQL, 0.0), (Stage.SAL, 2.0), (Stage.SQL, 5.0))  # (stage entered, hours after start)
WARM_UP_LEADS = 10
WALKING, BREACHING, FRESH = 4, 2, 4  # main phase: walk to sql; stay in mql 48 h; entered mql 1 h ago


@dataclass(frozen=True)
class Scenario:
    url: str
    before: float  # after Prometheus' first scrapes, before the main phase was published
    after: float  # every rule group has evaluated the main phase's final state
    campaign: str


def transition(
    lead: uuid.UUID, before: Stage | None, after: Stage, *, at: datetime, campaign: str
) -> LeadStageChanged:
    marketing = after in (Stage.LEAD, Stage.MQL)
    return LeadStageChanged(
        id=uuid.uuid4(),
        lead_id=lead,
        from_stage=before,
        to_stage=after,
        occurred_at=at,
        recorded_at=at + timedelta(seconds=1),
        cause=Cause(
            system=SourceSystem.HUBSPOT if marketing else SourceSystem.SALESFORCE,
            source_event_id=uuid.uuid4(),
            event_type=SourceEventType.CHANGED,
        ),
        attribution=Attribution(campaign=campaign, origin_system=SourceSystem.HUBSPOT),
    )


def walk(start: datetime, campaign: str) -> list[LeadStageChanged]:
    lead, previous, events = uuid.uuid4(), None, []
    for stage, hours in WALK:
        events.append(transition(lead, previous, stage, at=start + timedelta(hours=hours), campaign=campaign))
        previous = stage
    return events


def sample(name: str, **labels: str) -> float:
    return instruments.REGISTRY.get_sample_value(name, labels) or 0.0


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {WAIT_SECONDS} s waiting for {what}", pytrace=False)
        await asyncio.sleep(0.2)


async def query(client: httpx.AsyncClient, expr: str, *, at: float) -> list[dict[str, Any]]:
    """Evaluate an instant query; fail with Prometheus' error if it does not parse or evaluate."""
    response = await client.get("/api/v1/query", params={"query": expr, "time": f"{at:.3f}"})
    body = response.json()
    assert body["status"] == "success", f"{expr!r}: {body.get('errorType')}: {body.get('error')}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def by_label(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {series["metric"].get(label, ""): float(series["value"][1]) for series in result}


def grafana(expr: str) -> str:
    for variable, value in GRAFANA_VALUES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text)).timestamp()


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # leave the test process' signal handlers alone


async def _stop(server: _Server, serving: "asyncio.Task[None]") -> None:
    server.should_exit = True
    await asyncio.wait_for(serving, timeout=15)


@pytest.fixture(scope="module")
async def scenario(
    prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Scenario]:
    directory = tmp_path_factory.mktemp("prometheus-e2e")
    suffix = uuid.uuid4().hex[:8]
    campaign = f"e2e-{suffix}"
    topics = TopicSettings(topic_stage_changes=f"stages-{suffix}", topic_dead_letters=f"dead-{suffix}")
    settings = MetricsSettings(
        metrics_campaigns=[campaign], metrics_consumer_group=f"e2e-{suffix}", metrics_sla_check_seconds=0.5
    )
    start = datetime.now(UTC) - timedelta(hours=48)
    async with AsyncExitStack() as stack:
        bus = await stack.enter_async_context(
            open_bus(BusSettings(bus=BusKind.LOCAL, local_bus_path=directory / "bus.sqlite3"), topics=[])
        )
        engine = create_engine(DatabaseSettings(database_url=f"sqlite:///{directory}/metrics.sqlite3"))
        stack.push_async_callback(engine.dispose)

        def app() -> FastAPI:
            return create_app(
                bus=bus, engine=engine, topics=topics, settings=settings, funnel=FUNNEL, api_tokens=[]
            )

        async def counted(target: float) -> bool:
            return sample("onefunnel_metrics_events_consumed_total", result="new") >= target

        # Warm-up: counted before Prometheus can scrape anything (see the module docstring).
        warm_up = [event for _ in range(WARM_UP_LEADS) for event in walk(start, campaign)]
        target = sample("onefunnel_metrics_events_consumed_total", result="new") + len(warm_up)
        await bus.publish(topics.topic_stage_changes, [envelope.encode(e, source="/test") for e in warm_up])
        first = app()
        async with first.router.lifespan_context(first):
            await wait_for(lambda: counted(target), "the warm-up to be counted")

        config = uvicorn.Config(
            app(), host="127.0.0.1", port=prometheus.metrics_port, log_config=None, access_log=False
        )
        server = _Server(config)
        serving = asyncio.create_task(server.serve())
        stack.push_async_callback(_stop, server, serving)

        async def started() -> bool:
            assert not serving.done(), "the metrics service stopped while starting"
            return server.started

        await wait_for(started, "the metrics service to serve")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{prometheus.metrics_port}") as bi_tool:
            # refused (no API token is configured), and counted: the API panels have a series to read
            assert (await bi_tool.get("/v1/funnel")).status_code in (401, 403)
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=prometheus.url, timeout=5.0))

        async def scraped(times: int) -> bool:
            result = await query(client, f'sum_over_time(up{{job="{METRICS_JOB}"}}[5m])', at=time.time())
            return bool(result) and float(result[0]["value"][1]) >= times

        await wait_for(lambda: scraped(SCRAPES_BEFORE), f"{SCRAPES_BEFORE} scrapes of the metrics service")
        before = time.time()

        main = [event for _ in range(WALKING) for event in walk(start, campaign)]
        main += [
            transition(uuid.uuid4(), None, Stage.MQL, at=start, campaign=campaign) for _ in range(BREACHING)
        ]
        recent = datetime.now(UTC) - timedelta(hours=1)
        main += [
            transition(uuid.uuid4(), None, Stage.MQL, at=recent, campaign=campaign) for _ in range(FRESH)
        ]
        target = sample("onefunnel_metrics_events_consumed_total", result="new") + len(main)
        breaches = sample("onefunnel_sla_breaches_total", stage="mql") + BREACHING
        dead = sample("onefunnel_dead_letters_total", service="metrics", reason="undecodable") + 1
        undecodable = OutgoingMessage(
            key=b"garbage", value=b"{not json", headers=(("ce_specversion", b"1.0"),)
        )
        await bus.publish(
            topics.topic_stage_changes, [*(envelope.encode(e, source="/test") for e in main), undecodable]
        )

        async def settled() -> bool:
            return (
                await counted(target)
                and sample("onefunnel_sla_breaches_total", stage="mql") >= breaches
                and sample("onefunnel_leads_in_sla_breach", stage="mql") == BREACHING
                and sample("onefunnel_dead_letters_total", service="metrics", reason="undecodable") >= dead
            )

        await wait_for(settled, "the scenario to be counted, checked for SLA breaches and dead-lettered")
        settled_at = time.time()

        async def last_scrape() -> float:
            # timestamp() of a plain selector is the time of the sample: the last scrape
            last = await query(client, f'timestamp(up{{job="{METRICS_JOB}"}})', at=time.time())
            return float(last[0]["value"][1]) if last else 0.0

        async def scraped_since_settled() -> bool:
            return await last_scrape() > settled_at

        await wait_for(scraped_since_settled, "a scrape of the final state")
        scraped_at = await last_scrape()

        async def evaluated_since_scraped() -> bool:
            groups = (await client.get("/api/v1/rules")).json()["data"]["groups"]
            # a full evaluation interval after the scrape, so no group read the series mid-append
            return all(_timestamp(g["lastEvaluation"]) > scraped_at + 1.0 for g in groups)

        await wait_for(evaluated_since_scraped, "every rule group to evaluate the final state")
        yield Scenario(url=prometheus.url, before=before, after=time.time(), campaign=campaign)


@pytest.fixture
async def prometheus_api(scenario: Scenario) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=scenario.url, timeout=5.0) as client:
        yield client


def _from_metrics_service_only(expression: Expression) -> bool:
    served = {name for name, i in known_instruments().items() if "metrics" in i.services}
    return source_metrics(expression.expr, recording_rules()) <= served | {"up", "ALERTS"}


async def test_every_dashboard_and_rule_expression_parses_and_evaluates(
    scenario: Scenario, prometheus_api: httpx.AsyncClient
) -> None:
    alerts = {str(rule["expr"]) for _path, rule in rules() if "alert" in rule}
    expressions = rule_expressions() + [Expression(e.where, grafana(e.expr)) for e in dashboard_expressions()]
    returned: dict[str, bool] = {}
    for expression in expressions:
        result = await query(prometheus_api, expression.expr, at=scenario.after)
        # Only the metrics service is scraped here: expressions over ingest's and sync's metrics
        # have no series to read, so for them it is enough that Prometheus parsed and evaluated
        # them. An alert's expression is empty whenever the alert is not firing.
        if expression.expr not in alerts and _from_metrics_service_only(expression):
            # rules recording one name (one ratio per pair of stages) count together: a ratio
            # whose denominator did not move has no sample on purpose
            returned[expression.where] = returned.get(expression.where, False) or bool(result)
    empty = [where for where, any_result in returned.items() if not any_result]

    assert len(expressions) > 60
    assert empty == [], "expressions over the metrics service that returned nothing"


async def test_the_dashboard_variable_lists_the_scenario_campaign(
    scenario: Scenario, prometheus_api: httpx.AsyncClient
) -> None:
    for _where, metric, label in dashboard_variable_queries():
        response = await prometheus_api.get(f"/api/v1/label/{label}/values", params={"match[]": metric})

        assert response.json()["status"] == "success"
        assert scenario.campaign in response.json()["data"]


async def test_stage_entries_and_leads_in_stage_match_the_scenario(
    scenario: Scenario, prometheus_api: httpx.AsyncClient
) -> None:
    total = "sum by (stage) (onefunnel_stage_entries_total)"
    before = by_label(await query(prometheus_api, total, at=scenario.before), "stage")
    after = by_label(await query(prometheus_api, total, at=scenario.after), "stage")
    mql_in_range = await query(
        prometheus_api,
        grafana('sum(increase(onefunnel_stage_entries_total{stage="mql"}[$__range]))'),
        at=scenario.after,
    )
    now = by_label(
        await query(prometheus_api, "max by (stage) (onefunnel_leads_in_stage)", at=scenario.after), "stage"
    )
    entered = WALKING + BREACHING + FRESH

    assert {stage: after[stage] - before[stage] for stage in after} == {
        **{str(stage): 0.0 for stage in Stage},
        "mql": entered,
        "sal": WALKING,
        "sql": WALKING,
    }
    assert entered <= float(mql_in_range[0]["value"][1]) <= entered * EXTRAPOLATION_BOUND
    assert now == {
        **{str(stage): 0.0 for stage in Stage},
        "mql": BREACHING + FRESH,
        "sql": WARM_UP_LEADS + WALKING,
    }


async def test_conversion_ratios_and_time_in_stage_are_exact(
    scenario: Scenario, prometheus_api: httpx.AsyncClient
) -> None:
    async def values(expr: str, label: str) -> dict[str, float]:
        return by_label(await query(prometheus_api, expr, at=scenario.after), label)

    entered = WALKING + BREACHING + FRESH
    for window in ("7d", "30d"):
        ratios = await values(f'onefunnel:stage_conversion:ratio{window}{{from_stage="mql"}}', "to_stage")
        campaign = await values(
            f'onefunnel:campaign_conversion:ratio{window}{{campaign="{scenario.campaign}"}}', "to_stage"
        )
        later = await values(f"onefunnel:stage_conversion:ratio{window}", "from_stage")

        assert ratios == pytest.approx({"sal": WALKING / entered, "sql": WALKING / entered}, rel=1e-9)
        assert campaign == pytest.approx({"sql": WALKING / entered, "customer": 0.0}, rel=1e-9)
        assert later["sal"] == pytest.approx(1.0, rel=1e-9)  # every lead that entered sal went on to sql
        assert "lead" not in later  # nobody entered lead: no ratio rather than NaN
    assert await values("onefunnel:time_in_stage_seconds:mean7d", "stage") == pytest.approx(
        {"mql": 2 * 3600.0, "sal": 3 * 3600.0}, rel=1e-9
    )
    # all stays fall in the (1 h, 4 h] bucket: quantiles interpolate linearly inside it
    assert await values("onefunnel:time_in_stage_seconds:p50_30d", "stage") == pytest.approx(
        {"mql": 9000.0, "sal": 9000.0}, rel=1e-9
    )
    assert await values("onefunnel:time_in_stage_seconds:p90_30d", "stage") == pytest.approx(
        {"mql": 3600 + 10800 * 0.9, "sal": 3600 + 10800 * 0.9}, rel=1e-9
    )


async def test_sla_breaches_and_the_dead_letter_fire_their_alerts(
    scenario: Scenario, prometheus_api: httpx.AsyncClient
) -> None:
    counter = 'sum(onefunnel_sla_breaches_total{stage="mql"})'
    before = await query(prometheus_api, counter, at=scenario.before)
    after = await query(prometheus_api, counter, at=scenario.after)
    waiting = await query(prometheus_api, "max by (stage) (onefunnel_leads_in_sla_breach)", at=scenario.after)
    dead = await query(
        prometheus_api,
        grafana("sum by (service, reason) (increase(onefunnel_dead_letters_total[$__range]))"),
        at=scenario.after,
    )
    lag = await query(prometheus_api, "sum by (service) (onefunnel_consumer_lag_messages)", at=scenario.after)
    active = (await prometheus_api.get("/api/v1/alerts")).json()["data"]["alerts"]

    assert float(after[0]["value"][1]) - float(before[0]["value"][1]) == BREACHING
    assert by_label(waiting, "stage")["mql"] == BREACHING
    parked = {(s["metric"]["service"], s["metric"]["reason"]): float(s["value"][1]) for s in dead}
    assert 1.0 <= parked[("metrics", "undecodable")] <= EXTRAPOLATION_BOUND
    assert by_label(lag, "service") == {"metrics": 0.0}
    assert sorted(
        (a["labels"]["alertname"], a["state"], a["labels"].get("stage", a["labels"].get("service", "")))
        for a in active
        if a["labels"]["alertname"].startswith("Onefunnel")
    ) == [("OnefunnelDeadLettersGrowing", "firing", "metrics"), ("OnefunnelSlaBreaches", "firing", "mql")]


async def test_prometheus_loads_every_rule_and_evaluates_it_without_errors(
    scenario: Scenario, prometheus_api: httpx.AsyncClient
) -> None:
    groups = (await prometheus_api.get("/api/v1/rules")).json()["data"]["groups"]
    loaded = [rule for group in groups for rule in group["rules"]]

    assert sorted(rule["name"] for rule in loaded) == sorted(
        str(rule.get("record") or rule.get("alert")) for _path, rule in rules()
    )
    assert [(rule["name"], rule.get("lastError")) for rule in loaded if rule["health"] != "ok"] == []
