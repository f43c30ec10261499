"""The funnel read from the daily rollup and the derived columns equals the funnel counted by definition.

Random leads (re-entries, equal times, facts on midnights) are recorded in random batches and
orders; random windows (partial days, whole days), filters and groupings are asked of the API and
compared with a count straight from the definitions in funnel_query.py. The same facts stored
before migration 0004 and migrated must give the same derived columns, rollup and current stages.
"""

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Column, MetaData, Table, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from onefunnel.metrics.api import bi_router
from onefunnel.metrics.api.periods import Period, period_of
from onefunnel.metrics.facts import record
from onefunnel.metrics.tables import FunnelDayRow, LeadStageRow, TransitionRow
from onefunnel.shared.api_auth import bearer_auth
from onefunnel.shared.database import create_engine, migrate
from onefunnel.shared.events import Attribution, Cause, LeadStageChanged, SourceEventType, SourceSystem
from onefunnel.shared.settings import DatabaseSettings
from onefunnel.shared.stages import FUNNEL, Stage

TOKEN = "rollup-test-token"
MONDAY = datetime(2026, 10, 5, tzinfo=UTC)
CAMPAIGNS = ("spring", "autumn", None)
ORIGINS = (SourceSystem.HUBSPOT, SourceSystem.SALESFORCE, None)
OWNERS = ("rep-1", "rep-2", None)


def moments(rng: random.Random) -> list[datetime]:
    """A small pool of instants over 9 days, midnights included, so facts and windows share times."""
    pool = [MONDAY + timedelta(days=d) for d in range(10)]
    pool += [MONDAY + timedelta(minutes=rng.randrange(9 * 24 * 60)) for _ in range(14)]
    return sorted(pool)


def leads(rng: random.Random, pool: list[datetime]) -> list[LeadStageChanged]:
    events = []
    for _ in range(rng.randint(3, 8)):
        lead = uuid.UUID(int=rng.getrandbits(128))
        campaign, origin = rng.choice(CAMPAIGNS), rng.choice(ORIGINS)
        before: Stage | None = None
        for _ in range(rng.randint(1, 7)):
            stage = rng.choice([*FUNNEL, *FUNNEL[:4], Stage.NURTURE, Stage.DISQUALIFIED])
            events.append(
                LeadStageChanged(
                    id=uuid.UUID(int=rng.getrandbits(128)),
                    lead_id=lead,
                    from_stage=before,
                    to_stage=stage,
                    occurred_at=rng.choice(pool),
                    recorded_at=MONDAY,
                    cause=Cause(
                        system=SourceSystem.HUBSPOT,
                        source_event_id=uuid.UUID(int=rng.getrandbits(128)),
                        event_type=SourceEventType.CHANGED,
                    ),
                    attribution=Attribution(
                        campaign=campaign if rng.random() < 0.8 else rng.choice(CAMPAIGNS),
                        origin_system=origin,
                    ),
                    owner_id=rng.choice(OWNERS),
                )
            )
            before = stage
    return events


def matches(e: LeadStageChanged, query: dict[str, str]) -> bool:
    return (
        ("campaign" not in query or e.attribution.campaign == query["campaign"])
        and ("owner_id" not in query or e.owner_id == query["owner_id"])
        and ("source_system" not in query or e.attribution.origin_system == query["source_system"])
    )


def expected(
    events: list[LeadStageChanged],
    *,
    start: datetime,
    end: datetime,
    query: dict[str, str],
    groups: list[Any],
) -> dict[tuple[Any, str], tuple[int, int, int | None, int | None]]:
    """(group, stage) -> entries, leads, converted from previous, converted from subscriber."""

    def in_group(e: LeadStageChanged, group: Any) -> bool:
        by = query.get("group_by")
        if by == "campaign":
            return bool(e.attribution.campaign == group)
        if by is not None:
            return bool(period_of(e.occurred_at, Period(by)).date().isoformat() == group)
        return True

    result = {}
    for group in groups:
        chosen = [
            e for e in events if start <= e.occurred_at < end and matches(e, query) and in_group(e, group)
        ]
        first: dict[Stage, dict[uuid.UUID, datetime]] = {}
        for e in chosen:
            firsts = first.setdefault(e.to_stage, {})
            firsts[e.lead_id] = min(firsts.get(e.lead_id, e.occurred_at), e.occurred_at)

        def converted(s: Stage, t: Stage, first: dict[Stage, dict[uuid.UUID, datetime]] = first) -> int:
            return sum(
                any(e.lead_id == lead and e.to_stage == t and at <= e.occurred_at < end for e in events)
                for lead, at in first.get(s, {}).items()
            )

        for stage in Stage:
            previous = FUNNEL[FUNNEL.index(stage) - 1] if stage in FUNNEL[1:] else None
            from_base = None
            if stage == FUNNEL[0]:
                from_base = len(first.get(stage, {}))
            elif stage in FUNNEL:
                from_base = converted(FUNNEL[0], stage)
            result[(group, stage.value)] = (
                sum(e.to_stage == stage for e in chosen),
                len(first.get(stage, {})),
                converted(previous, stage) if previous else None,
                from_base,
            )
    return result


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseSettings(database_url=database_url))
    await migrate(engine, service="metrics")
    yield engine
    await engine.dispose()


async def record_shuffled(
    sessions: async_sessionmaker[AsyncSession], events: list[LeadStageChanged], rng: random.Random
) -> None:
    """Record in random order and batches, some events twice."""
    arriving = events + rng.sample(events, k=len(events) // 4)
    rng.shuffle(arriving)
    while arriving:
        size = rng.randint(1, 12)
        batch, arriving = arriving[:size], arriving[size:]
        async with sessions() as session, session.begin():
            await record(session, batch)


@pytest.mark.parametrize("seed", range(6))
async def test_the_funnel_equals_its_definition_for_random_facts_windows_and_groupings(
    engine: AsyncEngine, seed: int
) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    app = FastAPI()
    app.include_router(bi_router(sessions=sessions, auth=bearer_auth([TOKEN])))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://metrics",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as api:
        for scenario in range(4):
            rng = random.Random(seed * 100 + scenario)
            pool = moments(rng)
            events = leads(rng, pool)
            async with sessions() as session, session.begin():
                await session.execute(delete(TransitionRow))
                await session.execute(delete(FunnelDayRow))
            await record_shuffled(sessions, events, rng)
            for _ in range(12):
                start, end = sorted(rng.sample(pool, 2))
                query = {"from": start.isoformat(), "to": end.isoformat()}
                for name, values in (
                    ("campaign", CAMPAIGNS),
                    ("owner_id", OWNERS),
                    ("source_system", ORIGINS),
                ):
                    value = rng.choice(values)
                    if value is not None and rng.random() < 0.3:
                        query[name] = str(value)
                if rng.random() < 0.6:
                    query["group_by"] = rng.choice(["day", "week", "campaign"])
                response = await api.get("/v1/funnel", params=query)
                assert response.status_code == 200, response.text
                rows = response.json()["rows"]
                groups = list(dict.fromkeys(row["group"] for row in rows))
                got = {
                    (row["group"], row["stage"]): (
                        row["entries"],
                        row["leads"],
                        row["converted_from_previous"],
                        row["converted_from_base"],
                    )
                    for row in rows
                }
                if query.get("group_by") == "campaign":  # the campaigns of the matching facts, no others
                    window = [e for e in events if start <= e.occurred_at < end and matches(e, query)]
                    assert set(groups) == {e.attribution.campaign for e in window}, (seed, scenario, query)
                want = expected(events, start=start, end=end, query=query, groups=groups)
                assert got == want, (seed, scenario, query)


async def test_migrating_stored_facts_derives_what_recording_them_does(
    database_url: str, tmp_path: Any
) -> None:
    rng = random.Random(7)
    events = leads(rng, moments(rng)) + leads(rng, moments(rng))
    recorded = create_engine(DatabaseSettings(database_url=f"sqlite:///{tmp_path}/recorded.sqlite3"))
    await migrate(recorded, service="metrics")
    await record_shuffled(async_sessionmaker(recorded, expire_on_commit=False), events, rng)

    migrated = create_engine(DatabaseSettings(database_url=database_url))
    await migrate(migrated, service="metrics", revision="0003")
    table = TransitionRow.__table__  # type: ignore[attr-defined]
    before = [c for c in table.c if c.name != "first_entry" and not c.name.startswith("next_")]
    async with recorded.connect() as connection:
        stored = [dict(row._mapping) for row in await connection.execute(select(*before))]
    async with migrated.begin() as connection:  # the facts as revision 0003 stored them
        await connection.execute(
            insert(Table(table.name, MetaData(), *(Column(c.name, c.type) for c in before))), stored
        )
    await migrate(migrated, service="metrics")

    async def contents(engine: AsyncEngine) -> tuple[set[tuple[Any, ...]], ...]:
        async with engine.connect() as connection:
            derived = select(
                table.c.event_id, table.c.first_entry, *(table.c[f"next_{s}_at"] for s in FUNNEL[1:])
            )
            facts = {
                (row[0], bool(row[1]), *(None if n is None else n.replace(tzinfo=None) for n in row[2:]))
                for row in await connection.execute(derived)
            }
            rollup = {tuple(row) for row in await connection.execute(select(FunnelDayRow.__table__))}  # type: ignore[attr-defined]
            current = {
                (row.lead_id, row.stage, row.entered_at.replace(tzinfo=None))
                for row in await connection.execute(select(LeadStageRow.__table__))  # type: ignore[attr-defined]
            }
        return facts, rollup, current

    try:
        assert await contents(migrated) == await contents(recorded)
    finally:
        await recorded.dispose()
        await migrated.dispose()
