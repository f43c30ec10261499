"""One person, one lead: two leads started from different records join when the email shows they are one.

When sync lags, a Salesforce lead (with the email) can be handled before the HubSpot contact's
creation (without one): each starts a lead. The contact's email, when it comes, is the first sign
they are the same person; the leads must join, with both histories and the stage they decide.
"""

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col

from onefunnel.shared.database import create_engine, migrate
from onefunnel.shared.events import (
    Changes,
    LeadStageChanged,
    ObjectType,
    SourceEvent,
    SourceEventType,
    SourceSystem,
    from_json,
)
from onefunnel.shared.funnel import load_funnel
from onefunnel.shared.settings import DatabaseSettings
from onefunnel.shared.stages import Stage
from onefunnel.sync.consumer import apply
from onefunnel.sync.handler import Rules
from onefunnel.sync.tables import LeadLinkRow, LeadRow, OutboxRow, StageEventRow, WriteRow

RULES = Rules(
    funnel=load_funnel(),
    writable={SourceSystem.HUBSPOT: ObjectType.CONTACT, SourceSystem.SALESFORCE: ObjectType.LEAD},
)
T0 = datetime(2026, 11, 20, 9, tzinfo=UTC)
EMAIL = "one.person@example.com"


def event(source: SourceSystem, kind: SourceEventType, changes: Changes, *, minutes: int) -> SourceEvent:
    hubspot = source is SourceSystem.HUBSPOT
    return SourceEvent(
        id=uuid.uuid4(),
        idempotency_key=uuid.uuid4().hex,
        source=source,
        object_type=ObjectType.CONTACT if hubspot else ObjectType.LEAD,
        object_id="901" if hubspot else "00Q901",
        event_type=kind,
        changes=changes,
        occurred_at=T0 + timedelta(minutes=minutes),
        received_at=T0 + timedelta(minutes=minutes),
    )


async def test_a_lead_seen_first_in_salesforce_joins_the_contact_whose_email_arrives_later(
    database_url: str,
) -> None:
    engine = create_engine(DatabaseSettings(database_url=database_url))
    await migrate(engine, service="sync")
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    contact = event(
        SourceSystem.HUBSPOT, SourceEventType.CREATED, Changes(stage=Stage.LEAD, stage_raw="lead"), minutes=0
    )
    salesforce = event(
        SourceSystem.SALESFORCE,
        SourceEventType.CHANGED,
        Changes(stage=Stage.SAL, stage_raw="Working - Contacted", email=EMAIL.upper()),
        minutes=5,
    )
    email = event(SourceSystem.HUBSPOT, SourceEventType.CHANGED, Changes(email=EMAIL), minutes=1)

    first = await apply(sessions, salesforce, rules=RULES)  # handled before the contact existed
    second = await apply(sessions, contact, rules=RULES)
    joined = await apply(sessions, email, rules=RULES)

    async with sessions() as session:
        leads = {lead.id: lead for lead in (await session.scalars(select(LeadRow))).all()}
        links = (await session.scalars(select(LeadLinkRow))).all()
        history = (await session.scalars(select(StageEventRow))).all()
        writes = (await session.scalars(select(WriteRow).order_by(col(WriteRow.id)))).all()
        published = (await session.scalars(select(OutboxRow).order_by(col(OutboxRow.id)))).all()
    await engine.dispose()

    assert first.lead_id is not None and second.lead_id is not None
    assert first.lead_id != second.lead_id  # two leads until the email
    assert joined.outcome == "applied" and joined.lead_id == second.lead_id
    survivor, folded = leads[second.lead_id], leads[first.lead_id]
    assert (survivor.email, survivor.stage, survivor.merged_into) == (EMAIL, Stage.SAL, None)
    assert (folded.email, folded.merged_into) == (None, survivor.id)
    assert {(k.system, k.lead_id) for k in links} == {("hubspot", survivor.id), ("salesforce", survivor.id)}
    assert {h.lead_id for h in history} == {survivor.id}  # both histories, one lead
    assert len(history) == 2
    # The folded lead's HubSpot creation is superseded; HubSpot's contact is moved to the joined stage.
    assert [(w.lead_id, w.system, w.create, w.status) for w in writes] == [
        (folded.id, "hubspot", True, "superseded"),
        (survivor.id, "hubspot", False, "pending"),
    ]
    assert writes[1].value == "salesqualifiedlead"
    moves = [from_json(row.payload, LeadStageChanged) for row in published]
    assert [(m.lead_id, m.from_stage, m.to_stage) for m in moves] == [
        (folded.id, None, "sal"),
        (survivor.id, None, "lead"),
        (survivor.id, "lead", "sal"),
    ]
