"""Concurrent changes to one lead, handled at once on PostgreSQL, converge: optimistic versioning."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col

from onefunnel.shared.database import create_engine, migrate
from onefunnel.shared.events import Changes, ObjectType, SourceEvent, SourceEventType, SourceSystem
from onefunnel.shared.funnel import load_funnel
from onefunnel.shared.settings import DatabaseSettings
from onefunnel.shared.stages import Stage
from onefunnel.sync.consumer import apply
from onefunnel.sync.handler import Rules
from onefunnel.sync.tables import AuditRow, LeadRow, WriteRow
from onefunnel.sync.writer import WriteBack

pytestmark = pytest.mark.asyncio(loop_scope="session")
FUNNEL = load_funnel()
RULES = Rules(
    funnel=FUNNEL,
    writable={SourceSystem.HUBSPOT: ObjectType.CONTACT, SourceSystem.SALESFORCE: ObjectType.LEAD},
)
T0 = datetime(2026, 11, 20, 9, tzinfo=UTC)


def change(system: SourceSystem, stage: Stage, *, seconds: int) -> SourceEvent:
    hubspot = system is SourceSystem.HUBSPOT
    return SourceEvent(
        id=uuid.uuid4(),
        idempotency_key=uuid.uuid4().hex,
        source=system,
        object_type=ObjectType.CONTACT if hubspot else ObjectType.LEAD,
        object_id="501" if hubspot else "00Q501",
        event_type=SourceEventType.CHANGED,
        changes=Changes(stage=stage, stage_raw=str(stage), email="same.person@example.com"),
        occurred_at=T0 + timedelta(seconds=seconds),
        received_at=T0 + timedelta(seconds=seconds),
    )


async def test_changes_to_one_lead_from_both_systems_at_once_all_count_and_converge(
    postgres_url: str,
) -> None:
    engine = create_engine(DatabaseSettings(database_url=postgres_url))
    await migrate(engine, service="sync")
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    first = change(SourceSystem.HUBSPOT, Stage.LEAD, seconds=0)
    await apply(sessions, first, rules=RULES)
    marketing = [change(SourceSystem.HUBSPOT, s, seconds=i) for i, s in enumerate([Stage.MQL] * 6, 1)]
    sales = [
        change(SourceSystem.SALESFORCE, s, seconds=10 + i)
        for i, s in enumerate([Stage.SAL, Stage.SQL, Stage.OPPORTUNITY, Stage.CUSTOMER] * 2)
    ]

    handled = await asyncio.gather(*(apply(sessions, e, rules=RULES) for e in marketing + sales))

    async with sessions() as session:
        lead = await session.scalar(select(LeadRow).where(LeadRow.email == "same.person@example.com"))  # type: ignore[arg-type]
        audits = await session.scalar(select(func.count()).select_from(AuditRow))
    await engine.dispose()
    assert lead is not None and lead.stage == Stage.CUSTOMER
    assert {h.lead_id for h in handled} == {lead.id}
    assert audits == 1 + len(marketing) + len(sales)  # every event recorded exactly once
    assert lead.version == 1 + len(marketing) + len(sales)  # each one a version of its own


async def test_two_replicas_never_make_the_same_write_twice(postgres_url: str) -> None:
    engine = create_engine(DatabaseSettings(database_url=postgres_url))
    await migrate(engine, service="sync")
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        for n in range(30):
            session.add(
                WriteRow(
                    lead_id=uuid.uuid4(),
                    system="hubspot",
                    stage="sal",
                    value="salesqualifiedlead",
                    status="pending",
                    next_attempt_at=now,
                    cause_event_id=uuid.uuid4(),
                    occurred_at=now,
                    created_at=now,
                    record_id=f"contact-{n}",
                    delete=True,
                )
            )
    calls: list[str] = []

    class Recording:
        system, object_type = SourceSystem.HUBSPOT, ObjectType.CONTACT

        async def delete(self, record_id: str) -> None:
            calls.append(record_id)
            await asyncio.sleep(0.01)  # in flight while the other replica looks for work

    replicas = [WriteBack(client=Recording(), sessions=sessions) for _ in range(2)]  # type: ignore[arg-type]
    for _ in range(4):
        await asyncio.gather(*(replica.write_due() for replica in replicas))
    async with sessions() as session:
        statuses = (await session.scalars(select(col(WriteRow.status)))).all()
    await engine.dispose()

    assert statuses == ["done"] * 30
    assert len(calls) == len(set(calls)) == 30
