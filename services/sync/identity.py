"""Which canonical lead an event is about: by record link, else by email; merges and deletions.

A platform record belongs to exactly one lead (the link table's key is system + record id). An
event is matched by its own record's link, then by the links of the related records it names
(a converted lead's opportunity), then by normalized email; otherwise it starts a new lead.
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from onefunnel.shared import database
from onefunnel.shared.events import Changes, ObjectType, RecordLink, SourceEvent
from onefunnel.sync.tables import LeadLinkRow, LeadRow, StageEventRow, WriteRow


def as_utc(moment: datetime) -> datetime:
    """Times read back from SQLite come without their zone; every stored time is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def normalized_email(email: str | None) -> str | None:
    return email.strip().casefold() if email and email.strip() else None


def _records(event: SourceEvent) -> list[RecordLink]:
    own = RecordLink(system=event.source, object_type=event.object_type, record_id=event.object_id)
    return [own, *event.related]


Links = dict[tuple[str, str], tuple[LeadLinkRow, LeadRow | None]]  # by (system, record id), with the lead


async def _links(session: AsyncSession, records: list[RecordLink]) -> Links:
    """The links of `records` that exist, each with its lead, in one query."""
    keys = [(record.system.value, record.record_id) for record in records]
    rows = await session.execute(
        select(LeadLinkRow, LeadRow)
        .outerjoin(LeadRow, col(LeadRow.id) == col(LeadLinkRow.lead_id))
        .where(database.pairs_in(col(LeadLinkRow.system), col(LeadLinkRow.record_id), keys))
    )
    return {(link.system, link.record_id): (link, lead) for link, lead in rows}


async def _linked_lead(session: AsyncSession, records: list[RecordLink], links: Links) -> LeadRow | None:
    for record in records:
        _, lead = links.get((record.system.value, record.record_id), (None, None))
        while lead is not None and lead.merged_into is not None:
            lead = await session.get(LeadRow, lead.merged_into)
        if lead is not None:
            return lead
    return None


# Records that are not a person of their own: an event about one is matched through its link only.
SECONDARY = frozenset({ObjectType.OPPORTUNITY, ObjectType.DEAL})


@dataclass(frozen=True)
class Found:
    lead: LeadRow | None  # None: the event's lead is not known yet
    links: Links  # the links of the records the event names


async def find(session: AsyncSession, event: SourceEvent) -> Found:
    """The event's lead by record links, then by email, with the links it was looked up by."""
    links = await _links(session, _records(event))
    lead = await _linked_lead(session, _records(event), links)
    email = normalized_email(event.changes.email)
    if lead is None and email is not None:
        lead = await session.scalar(
            select(LeadRow).where(col(LeadRow.email) == email, col(LeadRow.merged_into).is_(None))
        )
    return Found(lead, links)


async def resolve(
    session: AsyncSession, event: SourceEvent, *, found: Found, now: datetime
) -> tuple[LeadRow, list[RecordLink]]:
    """Start the event's lead if none was found; link every record the event names to it.

    Returns the lead and the records linked to it just now. A record that was another lead's
    (a converted lead's opportunity that arrived first) brings that lead along: it is merged in.
    The lead comes back out of the session's unit of work: the handler writes it, once, version-checked.
    """
    lead = found.lead
    if lead is None:
        lead = LeadRow(id=uuid.uuid4(), origin_system=event.source, created_at=now, updated_at=now)
        session.add(lead)
        await session.flush()
    session.expunge(lead)
    linked = await _attach(session, _records(event), found.links, to=lead, now=now)
    return lead, linked


async def _attach(
    session: AsyncSession, records: list[RecordLink], links: Links, *, to: LeadRow, now: datetime
) -> list[RecordLink]:
    """Link `records` (whose existing `links` are given) to a lead; another lead's record brings it along."""
    linked = []
    for record in records:
        link, _ = links.get((record.system.value, record.record_id), (None, None))
        if link is None:
            link = LeadLinkRow(
                system=record.system,
                record_id=record.record_id,
                object_type=record.object_type,
                lead_id=to.id,
            )
            session.add(link)
            links[(record.system.value, record.record_id)] = (link, to)  # a record named twice is linked once
            linked.append(record)
        elif link.lead_id != to.id:
            other = await session.get(LeadRow, link.lead_id)
            if other is not None:
                await _fold_into(session, other, into=to, now=now)
    await session.flush()
    return linked


# What the lead's columns hold. A platform may send more: free text (a HubSpot UTM campaign is any
# property value) is kept to its first characters, the same for every event that sends it; an owner id
# cut short would name someone else, so a longer one is not taken.
_TEXT_LENGTHS = {
    name: LeadRow.__table__.c[name].type.length  # type: ignore[attr-defined]
    for name in ("campaign", "lead_source")
}
_OWNER_ID_LENGTH: int = LeadRow.__table__.c.owner_id.type.length  # type: ignore[attr-defined]


def take_attributes(lead: LeadRow, changes: Changes) -> None:
    """The latest score, owner and attribution reported win (the email is `update_attributes`' care)."""
    if changes.score is not None:
        lead.score = changes.score
    if changes.owner_id and len(changes.owner_id) <= _OWNER_ID_LENGTH:
        lead.owner_id = changes.owner_id
    for name, length in _TEXT_LENGTHS.items():
        if value := getattr(changes, name):
            setattr(lead, name, value[:length])


async def update_attributes(
    session: AsyncSession, lead: LeadRow, event: SourceEvent, *, now: datetime
) -> bool:
    """Keep the latest reported attributes; True when another lead joined this one.

    An email another lead already has is the same person, first seen through another record (a
    Salesforce lead handled before the HubSpot contact's email): that lead is folded into this one.
    """
    take_attributes(lead, event.changes)
    email = normalized_email(event.changes.email)
    if email is None or lead.email is not None:
        return False
    other = await session.scalar(
        select(LeadRow).where(
            col(LeadRow.email) == email, col(LeadRow.merged_into).is_(None), col(LeadRow.id) != lead.id
        )
    )
    if other is None:
        lead.email = email  # a concurrent taker makes the unique index refuse it: the handler retries
        return False
    await _fold_into(session, other, into=lead, now=now)
    return True


async def merge(session: AsyncSession, event: SourceEvent, *, into: LeadRow, now: datetime) -> None:
    """Fold the leads of the merged records into `into`, keeping every history entry and link."""
    losers = [
        RecordLink(system=event.source, object_type=event.object_type, record_id=r)
        for r in event.merged_object_ids
    ]
    await _attach(session, losers, await _links(session, losers), to=into, now=now)


async def _fold_into(session: AsyncSession, lead: LeadRow, *, into: LeadRow, now: datetime) -> None:
    """Move a lead's records and history into another; the emptied lead points at it from now on."""
    await session.execute(
        update(LeadLinkRow).where(col(LeadLinkRow.lead_id) == lead.id).values(lead_id=into.id)
    )
    await session.execute(
        update(StageEventRow).where(col(StageEventRow.lead_id) == lead.id).values(lead_id=into.id)
    )
    await session.execute(
        update(WriteRow)
        .where(col(WriteRow.lead_id) == lead.id, col(WriteRow.status) == "pending")
        .values(status="superseded")
    )
    email = lead.email
    lead.email = None
    lead.merged_into = into.id
    lead.updated_at = now
    lead.version += 1  # a transaction handling the folded lead meanwhile conflicts, and finds it merged
    await session.flush()  # frees the email before `into` takes it
    into.email = into.email or email


async def unlink(session: AsyncSession, event: SourceEvent, *, now: datetime) -> uuid.UUID | None:
    """A deleted record leaves its lead; a lead left with no record has its personal data purged.

    The lead's id, stage and history stay: they are anonymous, and the funnel's past counts need them.
    """
    link = await session.get(LeadLinkRow, (event.source.value, event.object_id))
    if link is None:
        return None
    lead_id = link.lead_id
    await session.delete(link)
    await session.flush()
    remaining = await session.scalar(
        select(col(LeadLinkRow.record_id)).where(col(LeadLinkRow.lead_id) == lead_id).limit(1)
    )
    if remaining is None:
        await session.execute(
            update(LeadRow)
            .where(col(LeadRow.id) == lead_id)
            .values(
                email=None, owner_id=None, deleted_at=now, updated_at=now, version=col(LeadRow.version) + 1
            )
        )
    return lead_id
