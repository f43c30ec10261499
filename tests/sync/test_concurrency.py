"""Concurrent changes to one lead, handled at once on PostgreSQL, converge: optimistic versioning."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col

from onefunnel.shared.database import create_engine, migrate
from onefunnel.shared.events import Changes, ObjectType, SourceEvent, SourceEventType, SourceSystem
from onefunnel.shared.funnel import load_funnel
from onefunnel.shared.settings import DatabaseSettings
from onefunnel.shared.stages import Stage
from onefunnel.sync import batch, batch_plan, consumer, instruments, write_results
from onefunnel.sync.consumer import apply
from onefunnel.sync.handler import Rules
from onefunnel.sync.platforms.base import PlatformError, StageWrite
from onefunnel.sync.tables import AuditRow, LeadLinkRow, LeadRow, WriteRow
from onefunnel.sync.writer import WriteBack

pytestmark = pytest.mark.asyncio(loop_scope="session")
FUNNEL = load_funnel()
RULES = Rules(
    funnel=FUNNEL,
    writable={SourceSystem.HUBSPOT: ObjectType.CONTACT, SourceSystem.SALESFORCE: ObjectType.LEAD},
)
T0 = datetime(2026, 11, 20, 9, tzinfo=UTC)


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated sync database of the test's own on the session's PostgreSQL server."""
    engine = create_engine(DatabaseSettings(database_url=postgres_url))
    await migrate(engine, service="sync")
    yield engine
    await engine.dispose()


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
    engine: AsyncEngine,
) -> None:
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
    assert lead is not None and lead.stage == Stage.CUSTOMER
    assert {h.lead_id for h in handled} == {lead.id}
    assert audits == 1 + len(marketing) + len(sales)  # every event recorded exactly once
    assert lead.version == 1 + len(marketing) + len(sales)  # each one a version of its own


def due_write(lead_id: uuid.UUID, *, now: datetime, **fields: Any) -> WriteRow:
    """A HubSpot write of salesqualifiedlead, due now."""
    return WriteRow(
        lead_id=lead_id,
        system="hubspot",
        stage="sql",
        value="salesqualifiedlead",
        status="pending",
        next_attempt_at=now,
        cause_event_id=uuid.uuid4(),
        occurred_at=now,
        created_at=now,
        **fields,
    )


async def test_two_replicas_never_make_the_same_write_twice(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        for n in range(30):
            session.add(due_write(uuid.uuid4(), now=now, record_id=f"contact-{n}", delete=True))
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

    assert statuses == ["done"] * 30
    assert len(calls) == len(set(calls)) == 30


async def test_writes_are_marked_done_while_the_consumer_holds_one_of_their_links(
    engine: AsyncEngine,
) -> None:
    """The writes' links are remembered at once; a link another transaction holds (the consumer's batch
    updating a record's stage) makes the writer give way and remember them one by one, never fail."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    now = datetime.now(UTC)
    leads = [uuid.uuid4() for _ in range(5)]
    async with sessions() as session, session.begin():
        session.add_all(
            LeadRow(id=lead_id, email=f"p{n}@example.com", created_at=now, updated_at=now)
            for n, lead_id in enumerate(leads)
        )
        await session.flush()
        for n, lead_id in enumerate(leads):
            session.add(
                LeadLinkRow(system="hubspot", record_id=f"c{n}", object_type="contact", lead_id=lead_id)
            )
            session.add(due_write(lead_id, now=now))

    class Recording:
        system, object_type = SourceSystem.HUBSPOT, ObjectType.CONTACT

        async def write_stages(self, writes: list[StageWrite]) -> list[PlatformError | None]:
            await asyncio.sleep(0)
            return [None] * len(writes)

    async with engine.connect() as consumer:  # holds the link of c3 past the writer's lock timeout
        await consumer.begin()
        await consumer.execute(
            update(LeadLinkRow).where(col(LeadLinkRow.record_id) == "c3").values(stage_raw="lead")
        )
        writing = asyncio.create_task(WriteBack(client=Recording(), sessions=sessions).write_due())  # type: ignore[arg-type]
        await asyncio.sleep(write_results.LOCK_WAIT_MS / 1000 * 3)
        assert not writing.done()  # waiting for c3, having given way once
        await consumer.commit()
    assert await writing == 5
    async with sessions() as session:
        statuses = (await session.scalars(select(col(WriteRow.status)))).all()
        values = (await session.scalars(select(col(LeadLinkRow.stage_raw)))).all()

    assert statuses == ["done"] * 5
    assert values == ["salesqualifiedlead"] * 5


async def test_a_batch_that_lost_a_race_for_a_link_is_planned_again_not_handled_one_by_one(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write-back links a record between the batch's plan and its insert: the batch is tried again."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    salesforce_first = change(SourceSystem.SALESFORCE, Stage.SAL, seconds=0)  # the lead, with the email
    assert await consumer._apply_all(sessions, [salesforce_first], rules=RULES) is not None
    async with sessions() as session:
        lead_id = await session.scalar(select(col(LeadRow.id)))
    assert lead_id is not None
    plan_run = batch_plan.plan_run
    races: list[str] = []

    async def raced(*args: Any, **kwargs: Any) -> batch_plan.Plan:
        planned = await plan_run(*args, **kwargs)
        if not races:  # the HubSpot write-back found the contact by email and linked it meanwhile
            races.append("501")
            async with sessions() as session, session.begin():
                session.add(
                    LeadLinkRow(system="hubspot", record_id="501", object_type="contact", lead_id=lead_id)
                )
        return planned

    monkeypatch.setattr(batch, "plan_run", raced)
    fallbacks = instruments.REGISTRY.get_sample_value(
        "onefunnel_sync_batch_fallbacks_total", {"reason": "conflict"}
    )
    hubspot = change(SourceSystem.HUBSPOT, Stage.MQL, seconds=1)  # contact 501, the same email
    handled = await consumer._apply_all(sessions, [hubspot], rules=RULES)
    async with sessions() as session:
        links = (await session.execute(select(col(LeadLinkRow.record_id), col(LeadLinkRow.lead_id)))).all()

    assert races == ["501"]
    assert handled is not None and [h.lead_id for h in handled] == [lead_id]
    assert sorted(links) == [("00Q501", lead_id), ("501", lead_id)]
    assert (
        instruments.REGISTRY.get_sample_value("onefunnel_sync_batch_fallbacks_total", {"reason": "conflict"})
        == fallbacks
    )


async def test_a_failed_lookup_by_email_puts_the_writes_that_needed_it_back_in_the_queue(
    engine: AsyncEngine,
) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    now = datetime.now(UTC)
    lead_id = uuid.uuid4()
    async with sessions() as session, session.begin():
        session.add(LeadRow(id=lead_id, email="ada@example.com", created_at=now, updated_at=now))
        await session.flush()
        session.add(due_write(lead_id, now=now))  # no HubSpot record linked: found by the email first

    class Unreachable:
        system, object_type = SourceSystem.HUBSPOT, ObjectType.CONTACT

        async def find_by_emails(self, emails: list[str]) -> dict[str, str]:
            raise PlatformError("HubSpot POST search timed out", retriable=True)

    assert await WriteBack(client=Unreachable(), sessions=sessions).write_due() == 1  # type: ignore[arg-type]
    async with sessions() as session:
        row = await session.scalar(select(WriteRow))

    assert row is not None
    assert (row.status, row.attempts, row.next_attempt_at > now) == ("pending", 1, True)
