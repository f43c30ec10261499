"""The batch's INSERTs use generic plans; the look-ups after them are planned for their values again."""

import uuid
from datetime import UTC, datetime

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col

from onefunnel.shared.database import create_engine, migrate
from onefunnel.shared.events import Changes, ObjectType, SourceEvent, SourceEventType, SourceSystem
from onefunnel.shared.funnel import load_funnel
from onefunnel.shared.settings import DatabaseSettings
from onefunnel.shared.stages import Stage
from onefunnel.sync.batch import handle_batch
from onefunnel.sync.handler import Rules
from onefunnel.sync.tables import LeadLinkRow

RULES = Rules(
    funnel=load_funnel(),
    writable={SourceSystem.HUBSPOT: ObjectType.CONTACT, SourceSystem.SALESFORCE: ObjectType.LEAD},
)


def created(contact: str) -> SourceEvent:
    now = datetime.now(UTC)
    return SourceEvent(
        id=uuid.uuid4(),
        idempotency_key=uuid.uuid4().hex,
        source=SourceSystem.HUBSPOT,
        object_type=ObjectType.CONTACT,
        object_id=contact,
        event_type=SourceEventType.CREATED,
        changes=Changes(stage=Stage.LEAD, stage_raw="lead"),
        occurred_at=now,
        received_at=now,
    )


async def test_a_batch_leaves_its_transaction_planning_as_the_connection_does(postgres_url: str) -> None:
    engine = create_engine(DatabaseSettings(database_url=postgres_url))
    await migrate(engine, service="sync")
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    async with sessions() as session, session.begin():
        await handle_batch(session, [created("701"), created("702")], rules=RULES, now=datetime.now(UTC))
        after_batch = (await session.execute(text("SHOW plan_cache_mode"))).scalar()
    async with sessions() as session:
        raws = (await session.execute(select(col(LeadLinkRow.record_id), col(LeadLinkRow.stage_raw)))).all()
    await engine.dispose()

    assert after_batch == "force_custom_plan"
    assert sorted(raws) == [("701", "lead"), ("702", "lead")]  # linked in the batch, inserted with it
