"""The metrics service counts each transition once, into facts and Prometheus, and survives a restart."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from onefunnel.metrics import instruments
from onefunnel.metrics.app import create_app
from onefunnel.metrics.facts import record
from onefunnel.metrics.settings import MetricsSettings
from onefunnel.metrics.sla import check_once, run_sla_checks
from onefunnel.metrics.tables import TransitionRow
from onefunnel.shared import envelope
from onefunnel.shared.bus import Bus, open_bus
from onefunnel.shared.database import create_engine, migrate
from onefunnel.shared.events import Attribution, Cause, LeadStageChanged, SourceEventType, SourceSystem
from onefunnel.shared.funnel import load_funnel
from onefunnel.shared.settings import BusKind, BusSettings, DatabaseSettings, TopicSettings
from onefunnel.shared.stages import Stage

pytestmark = pytest.mark.asyncio(loop_scope="session")
T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
FUNNEL = load_funnel()


def transition(
    lead: uuid.UUID, before: Stage | None, after: Stage, *, hours: float, campaign: str
) -> LeadStageChanged:
    return LeadStageChanged(
        id=uuid.uuid4(),
        lead_id=lead,
        from_stage=before,
        to_stage=after,
        occurred_at=T0 + timedelta(hours=hours),
        recorded_at=T0 + timedelta(hours=hours, seconds=1),
        cause=Cause(
            system=SourceSystem.HUBSPOT if after in (Stage.LEAD, Stage.MQL) else SourceSystem.SALESFORCE,
            source_event_id=uuid.uuid4(),
            event_type=SourceEventType.CHANGED,
        ),
        attribution=Attribution(campaign=campaign, origin_system=SourceSystem.HUBSPOT),
    )


def sample(name: str, **labels: str) -> float:
    return instruments.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    async with open_bus(
        BusSettings(bus=BusKind.LOCAL, local_bus_path=tmp_path / "bus.sqlite3"), topics=[]
    ) as opened:
        yield opened


async def run_until_counted(app: FastAPI, engine_url: str, expected: int) -> None:
    """Run the app until `expected` facts are stored and every consumed message was counted."""
    engine = create_engine(DatabaseSettings(database_url=engine_url))
    consumed = sample("onefunnel_metrics_events_consumed_total", result="new")
    async with asyncio.timeout(60), app.router.lifespan_context(app):
        while True:
            async with engine.connect() as connection:
                stored = await connection.scalar(select(func.count()).select_from(TransitionRow))
            # the counters move right after the batch's facts commit: wait for them too, never a fixed sleep
            if (
                stored == expected
                and sample("onefunnel_metrics_events_consumed_total", result="new") > consumed
            ):
                break
            await asyncio.sleep(0.1)
    await engine.dispose()


async def test_each_transition_is_counted_once_even_when_delivered_twice(bus: Bus, tmp_path: Path) -> None:
    topics = TopicSettings(topic_stage_changes=f"stages-{uuid.uuid4().hex[:8]}")
    url = f"sqlite:///{tmp_path}/metrics.sqlite3"
    campaign = f"webinar-{uuid.uuid4().hex[:6]}"
    settings = MetricsSettings(metrics_campaigns=[campaign], metrics_consumer_group=f"m-{uuid.uuid4().hex}")
    lead = uuid.uuid4()
    walk = [
        transition(lead, None, Stage.LEAD, hours=0, campaign=campaign),
        transition(lead, Stage.LEAD, Stage.MQL, hours=2, campaign=campaign),
        transition(lead, Stage.MQL, Stage.SAL, hours=5, campaign=campaign),
    ]
    before = {
        "mql_to_sal": sample("onefunnel_stage_transitions_total", from_stage="mql", to_stage="sal"),
        "campaign": sample("onefunnel_campaign_stage_entries_total", campaign=campaign, stage="mql"),
        "time_in_mql": sample("onefunnel_time_in_stage_seconds_sum", stage="mql"),
    }
    await bus.publish(
        topics.topic_stage_changes, [envelope.encode(e, source="/test") for e in walk + walk[1:]]
    )

    engine = create_engine(DatabaseSettings(database_url=url))
    await run_until_counted(
        create_app(bus=bus, engine=engine, topics=topics, settings=settings, funnel=FUNNEL, api_tokens=[]),
        url,
        3,
    )
    await engine.dispose()

    assert (
        sample("onefunnel_stage_transitions_total", from_stage="mql", to_stage="sal")
        == before["mql_to_sal"] + 1
    )
    assert (
        sample("onefunnel_campaign_stage_entries_total", campaign=campaign, stage="mql")
        == before["campaign"] + 1
    )
    assert sample("onefunnel_time_in_stage_seconds_sum", stage="mql") == before["time_in_mql"] + 3 * 3600
    assert sample("onefunnel_metrics_events_consumed_total", result="duplicate") >= 2


async def test_leads_in_stage_is_recomputed_from_the_facts_after_a_restart(
    bus: Bus, database_url: str
) -> None:
    topics = TopicSettings(topic_stage_changes=f"stages-{uuid.uuid4().hex[:8]}")
    url = database_url
    settings = MetricsSettings(metrics_consumer_group=f"m-{uuid.uuid4().hex}")
    leads = [uuid.uuid4() for _ in range(3)]
    events = [transition(lead, None, Stage.MQL, hours=0, campaign="x") for lead in leads]
    events.append(transition(leads[0], Stage.MQL, Stage.SAL, hours=1, campaign="x"))
    events.append(transition(leads[1], None, Stage.LEAD, hours=-5, campaign="x"))  # older, arrives last
    await bus.publish(topics.topic_stage_changes, [envelope.encode(e, source="/test") for e in events])
    engine = create_engine(DatabaseSettings(database_url=url))
    await run_until_counted(
        create_app(bus=bus, engine=engine, topics=topics, settings=settings, funnel=FUNNEL, api_tokens=[]),
        url,
        5,
    )

    instruments.LEADS_IN_STAGE.labels("mql").set(999)  # a restarted process starts from nothing
    restarted = create_app(
        bus=bus, engine=engine, topics=topics, settings=settings, funnel=FUNNEL, api_tokens=[]
    )
    async with (
        asyncio.timeout(60),
        restarted.router.lifespan_context(restarted),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=restarted), base_url="http://m") as client,
    ):
        while sample("onefunnel_leads_in_stage", stage="mql") == 999:  # noqa: ASYNC110 (until the counter sets it)
            await asyncio.sleep(0.1)
        exposition = (await client.get("/metrics")).text
    await engine.dispose()

    assert 'onefunnel_leads_in_stage{stage="mql"} 2.0' in exposition
    assert 'onefunnel_leads_in_stage{stage="sal"} 1.0' in exposition
    assert 'onefunnel_leads_in_stage{stage="lead"} 0.0' in exposition


async def test_a_lead_left_in_mql_past_the_sla_is_one_breach_however_often_it_is_checked(
    database_url: str,
) -> None:

    engine = create_engine(DatabaseSettings(database_url=database_url))
    await migrate(engine, service="metrics")
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    waiting, accepted, fresh = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = T0 + timedelta(hours=30)
    async with sessions() as session, session.begin():
        await record(
            session,
            [
                transition(waiting, None, Stage.MQL, hours=0, campaign="x"),
                transition(accepted, None, Stage.MQL, hours=0, campaign="x"),
                transition(accepted, Stage.MQL, Stage.SAL, hours=3, campaign="x"),
                transition(fresh, None, Stage.MQL, hours=20, campaign="x"),
            ],
        )
    before = sample("onefunnel_sla_breaches_total", stage="mql")

    async with sessions() as session, session.begin():
        first = await check_once(session, FUNNEL.sla, now=now)
    async with sessions() as session, session.begin():
        second = await check_once(session, FUNNEL.sla, now=now + timedelta(minutes=1))
    await engine.dispose()

    assert first == second == {Stage.MQL: 1}
    assert sample("onefunnel_sla_breaches_total", stage="mql") == before + 1


async def test_every_sla_check_resets_leads_in_stage_to_the_database_wide_count(database_url: str) -> None:
    """A replica moves the gauge only by the events it counts; the check puts every replica right."""
    engine = create_engine(DatabaseSettings(database_url=database_url))
    await migrate(engine, service="metrics")
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():  # counted by "another replica"
        await record(
            session, [transition(uuid.uuid4(), None, Stage.MQL, hours=0, campaign="x") for _ in range(3)]
        )
    instruments.LEADS_IN_STAGE.labels("mql").set(999)

    checks = asyncio.create_task(run_sla_checks(sessions=sessions, sla=FUNNEL.sla, every=0.05))
    try:
        async with asyncio.timeout(30):
            while sample("onefunnel_leads_in_stage", stage="mql") == 999:  # noqa: ASYNC110 (until a check sets it)
                await asyncio.sleep(0.05)
    finally:
        checks.cancel()
        await asyncio.gather(checks, return_exceptions=True)
    await engine.dispose()

    assert sample("onefunnel_leads_in_stage", stage="mql") == 3
