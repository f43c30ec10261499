"""Which lead each event of a consumer batch is about, told in memory as `handle` tells it one by one.

By its records' links, else by email, else a new lead, with the records and the email it brings that lead; an
opportunity nobody is linked to yet is parked. The run stops at the first event that would merge, delete, fold
another lead in or unpark events: `handle` takes that one.
"""

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from onefunnel.shared.events import RecordLink, SourceEvent, SourceEventType
from onefunnel.sync import identity
from onefunnel.sync.handler import parked_row
from onefunnel.sync.tables import InboxRow, LeadLinkRow, LeadRow, ParkedEventRow


@dataclass
class Plan:
    """A run of routine events: whose lead each is, and the leads, links and emails they bring."""

    events: list[SourceEvent] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # per event: routine, duplicate or parked
    leads: list[uuid.UUID | None] = field(default_factory=list)  # per routine event
    parks: list[ParkedEventRow | None] = field(default_factory=list)  # per event parked for the first time
    emails: list[str | None] = field(default_factory=list)  # per event: the email it gives its lead
    links: list[list[LeadLinkRow]] = field(default_factory=list)  # per event: the records it links
    rows: dict[uuid.UUID, Row[Any] | LeadRow] = field(default_factory=dict)  # stored, or new
    new_leads: list[LeadRow] = field(default_factory=list)

    def add(
        self,
        event: SourceEvent,
        kind: str,
        lead_id: uuid.UUID | None,
        email: str | None,
        links: list[LeadLinkRow],
        park: ParkedEventRow | None,
    ) -> None:
        self.events.append(event)
        self.kinds.append(kind)
        self.leads.append(lead_id)
        self.emails.append(email)
        self.links.append(links)
        self.parks.append(park)


async def plan_run(session: AsyncSession, events: list[SourceEvent], *, now: datetime) -> Plan:
    """The longest run of `events` whose leads are told as `handle` tells them, without merging,
    folding, deleting or unparking anything; those are left to `handle`."""
    records = {key: r for e in events for key, r in _records(e).items()}
    linked = await _leads_of_records(session, list(records))
    by_email = await _leads_by_email(session, events)
    parked, parked_events = await _parked(session, [key for key in records if key not in linked])
    seen = await _processed(session, events)
    plan = Plan()
    email_of: dict[uuid.UUID, str | None] = {}
    for row in [*linked.values(), *by_email.values()]:
        plan.rows.setdefault(row.id, row)
        email_of.setdefault(row.id, row.email)
    owner = {key: row.id for key, row in linked.items()}  # record -> its lead
    email_owner = {email: row.id for email, row in by_email.items()}
    for event in events:
        key = (event.source.value, event.idempotency_key)
        if key in seen:  # a redelivery: `handle` would stop at the inbox
            plan.add(event, "duplicate", None, None, [], None)
            continue
        if event.event_type in (SourceEventType.DELETED, SourceEventType.MERGED):
            break
        own = _records(event)
        email = identity.normalized_email(event.changes.email)
        lead_id = next((owner[k] for k in own if k in owner), None)
        if lead_id is not None and plan.rows[lead_id].merged_into is not None:
            break
        if lead_id is None and email is not None:
            lead_id = email_owner.get(email)
        new_lead = None
        if lead_id is None and event.object_type in identity.SECONDARY:  # parked until its record is linked
            park = None if event.id in parked_events else parked_row(event, now=now)
            parked.add((event.source.value, event.object_id))
            parked_events.add(event.id)
            plan.add(event, "parked", None, None, [], park)  # not in the inbox: handled when unparked
            continue
        if lead_id is None:
            new_lead = LeadRow(id=uuid.uuid4(), origin_system=event.source, created_at=now, updated_at=now)
            lead_id = new_lead.id
        unlinked = [k for k in own if k not in owner]
        if any(owner[k] != lead_id for k in own if k in owner) or any(k in parked for k in unlinked):
            break  # another lead's record joins (a fold), or parked events wait for a record
        gives_email = email if email is not None and email_of.get(lead_id) is None else None
        if gives_email is not None and email_owner.get(gives_email, lead_id) != lead_id:
            break  # the email is another lead's: `handle` folds that lead in
        if new_lead is not None:
            plan.new_leads.append(new_lead)
            plan.rows[lead_id] = new_lead
        new_links = []
        for k in unlinked:
            owner[k] = lead_id
            new_links.append(
                LeadLinkRow(
                    system=own[k].system,
                    record_id=own[k].record_id,
                    object_type=own[k].object_type,
                    lead_id=lead_id,
                )
            )
        if gives_email is not None:
            email_of[lead_id] = gives_email
            email_owner[gives_email] = lead_id
        seen.add(key)
        plan.add(event, "routine", lead_id, gives_email, new_links, None)
    return plan


def _records(event: SourceEvent) -> dict[tuple[str, str], RecordLink]:
    own = RecordLink(system=event.source, object_type=event.object_type, record_id=event.object_id)
    return {(r.system.value, r.record_id): r for r in [own, *event.related]}


async def _leads_of_records(
    session: AsyncSession, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], Row[Any]]:
    """The lead each linked record belongs to, as a plain row."""
    link, lead = LeadLinkRow.__table__, LeadRow.__table__  # type: ignore[attr-defined]
    rows = await session.execute(
        select(link.c.system.label("link_system"), link.c.record_id.label("link_record_id"), lead)
        .join(lead, lead.c.id == link.c.lead_id)
        .where(tuple_(link.c.system, link.c.record_id).in_(keys))
    )
    return {(r.link_system, r.link_record_id): r for r in rows}


async def _leads_by_email(session: AsyncSession, events: list[SourceEvent]) -> dict[str, Row[Any]]:
    emails = {e for event in events if (e := identity.normalized_email(event.changes.email)) is not None}
    if not emails:
        return {}
    lead = LeadRow.__table__  # type: ignore[attr-defined]
    rows = await session.execute(select(lead).where(lead.c.email.in_(emails), lead.c.merged_into.is_(None)))
    return {r.email: r for r in rows}


async def _parked(
    session: AsyncSession, keys: list[tuple[str, str]]
) -> tuple[set[tuple[str, str]], set[uuid.UUID]]:
    """Which of the records have events waiting for them, and those events' ids."""
    if not keys:
        return set(), set()
    parked = ParkedEventRow.__table__  # type: ignore[attr-defined]
    rows = (
        await session.execute(
            select(parked.c.system, parked.c.record_id, parked.c.event_id).where(
                tuple_(parked.c.system, parked.c.record_id).in_(keys)
            )
        )
    ).all()
    return {(r.system, r.record_id) for r in rows}, {r.event_id for r in rows}


async def _processed(session: AsyncSession, events: list[SourceEvent]) -> set[tuple[str, str]]:
    inbox = InboxRow.__table__  # type: ignore[attr-defined]
    keys = list({(e.source.value, e.idempotency_key) for e in events})
    rows = await session.execute(
        select(inbox.c.source, inbox.c.idempotency_key).where(
            tuple_(inbox.c.source, inbox.c.idempotency_key).in_(keys)
        )
    )
    return {(source, key) for source, key in rows}
