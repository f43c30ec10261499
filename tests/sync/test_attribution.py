"""Attribution longer than the columns that keep it (a HubSpot UTM campaign can run to thousands of
characters) is kept to its first characters, and an owner id too long to keep is not taken, on either
path, instead of failing the event on PostgreSQL."""

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col

from onefunnel.shared.database import create_engine, migrate
from onefunnel.shared.events import Changes, ObjectType, SourceEvent, SourceEventType, SourceSystem
from onefunnel.shared.funnel import load_funnel
from onefunnel.shared.settings import DatabaseSettings
from onefunnel.shared.stages import Stage
from onefunnel.sync.batch import handle_batch
from onefunnel.sync.consumer import apply
from onefunnel.sync.handler import Rules
from onefunnel.sync.tables import LeadRow, OutboxRow

RULES = Rules(
    funnel=load_funnel(),
    writable={SourceSystem.HUBSPOT: ObjectType.CONTACT, SourceSystem.SALESFORCE: ObjectType.LEAD},
)
LONG = {"campaign": "spring-" + "c" * 400, "lead_source": "s" * 300, "owner_id": "7" * 256}


def creation() -> SourceEvent:
    now = datetime(2026, 11, 23, 9, tzinfo=UTC)
    return SourceEvent(
        id=uuid.uuid4(),
        idempotency_key=uuid.uuid4().hex,
        source=SourceSystem.HUBSPOT,
        object_type=ObjectType.CONTACT,
        object_id=str(uuid.uuid4().int % 10**9),
        event_type=SourceEventType.CREATED,
        changes=Changes(
            stage=Stage.LEAD,
            stage_raw="lead",
            campaign=LONG["campaign"],
            lead_source=LONG["lead_source"],
            owner_id=LONG["owner_id"],
        ),
        occurred_at=now,
        received_at=now,
    )


@pytest.mark.parametrize("path", ["one event", "batch"])
async def test_long_attribution_is_cut_to_its_columns_and_a_long_owner_id_left_out(
    database_url: str, path: str
) -> None:
    engine = create_engine(DatabaseSettings(database_url=database_url))
    await migrate(engine, service="sync")
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    event = creation()

    if path == "one event":
        handled = await apply(sessions, event, rules=RULES)
    else:
        async with sessions() as session, session.begin():
            [handled] = await handle_batch(session, [event], rules=RULES, now=datetime.now(UTC))

    async with sessions() as session:
        lead = await session.get(LeadRow, handled.lead_id)
        payloads = (await session.scalars(select(col(OutboxRow.payload)))).all()
    await engine.dispose()
    assert lead is not None
    assert (lead.campaign, lead.lead_source) == (LONG["campaign"][:255], LONG["lead_source"][:255])
    assert lead.owner_id is None  # cut short, it would be another owner's id
    assert payloads and all(LONG["campaign"][:255] in p and LONG["campaign"] not in p for p in payloads)
