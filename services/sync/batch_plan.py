"""Which lead each event of a consumer batch is about, told in memory as `handle` tells it one by one.

By its records' links, else by email, else a new lead, with the records and the email it brings that lead. An
opportunity nobody is linked to yet is parked, and comes back right after the event that links it. The run
stops at the first event that would merge, delete or fold another lead in: `handle` takes that one.
"""

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from onefunnel.shared import database
from onefunnel.shared.events import RecordLink, SourceEvent, SourceEventType, from_json
from onefunnel.sync import identity
from onefunnel.sync.handler import parked_row
from onefunnel.sync.tables import ColumnValues, InboxRow, LeadLinkRow, LeadRow, ParkedEventRow, detached_lead


@dataclass
class Plan:
    """A run of routine events: whose lead each is, and the leads, links and emails they bring."""

    events: list[SourceEvent] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # per event: routine, duplicate, parked or unparked
    leads: list[uuid.UUID | None] = field(default_factory=list)  # per routine or unparked event
    parks: list[ParkedEventRow | None] = field(default_factory=list)  # per event parked for the first time
    emails: list[str | None] = field(default_factory=list)  # per event: the email it gives its lead
    links: list[list[ColumnValues]] = field(default_factory=list)  # per event: the links it adds, as rows
    rows: dict[uuid.UUID, Row[Any] | LeadRow] = field(default_factory=dict)  # stored, or new
    new_leads: list[LeadRow] = field(default_factory=list)
    unparked_rows: list[int] = field(default_factory=list)  # stored parked events taken out of the car park

    @property
    def taken(self) -> int:
        """How many of the given events the run holds (unparked ones came from the car park)."""
        return sum(kind != "unparked" for kind in self.kinds)

    def add(
        self,
        event: SourceEvent,
        kind: str,
        lead_id: uuid.UUID | None,
        email: str | None,
        links: list[ColumnValues],
        park: ParkedEventRow | None,
    ) -> None:
        self.events.append(event)
        self.kinds.append(kind)
        self.leads.append(lead_id)
        self.emails.append(email)
        self.links.append(links)
        self.parks.append(park)


@dataclass
class _Waiting:
    """An event waiting for its record to be linked: stored (with its row id) or parked earlier in the run."""

    event: SourceEvent
    row_id: int | None = None
    index: int | None = None  # its place in the plan, when parked in this run


async def plan_run(session: AsyncSession, events: list[SourceEvent], *, now: datetime) -> Plan:
    """The longest run of `events` whose leads are told as `handle` tells them, without merging,
    folding or deleting anything; those are left to `handle`. An event that links a record other
    events wait for brings them along, right after it, as `handle` unparks them."""
    records = {key: r for e in events for key, r in _records(e).items()}
    waiting = await _parked(session, list(records))
    waited = [w.event for queue in waiting.values() for w in queue]
    planner = _Planner(
        plan=Plan(),
        now=now,
        records=set(records),
        emails=_emails([*events, *waited]),
        waiting=waiting,
        parked_events={event.id for event in waited},
        seen=await _processed(session, [*events, *waited]),
    )
    for row in [
        *await _leads_of_records(session, list(records)),
        *await _leads_by_email(session, planner.emails),
    ]:
        planner.know(row)
    for event in events:
        if not planner.take(event):
            break
    return planner.plan


@dataclass
class _Planner:
    """What the run has told so far: whose each record and email is, and which events wait for a record."""

    plan: Plan
    now: datetime
    records: set[tuple[str, str]]  # whose links and parked events were looked up
    emails: set[str]  # whose leads were looked up
    waiting: dict[tuple[str, str], list[_Waiting]]
    parked_events: set[uuid.UUID]
    seen: set[tuple[str, str]]  # in the inbox, or in the run
    owner: dict[tuple[str, str], uuid.UUID] = field(default_factory=dict)  # record -> its lead
    email_owner: dict[str, uuid.UUID] = field(default_factory=dict)
    email_of: dict[uuid.UUID, str | None] = field(default_factory=dict)

    def know(self, row: Row[Any]) -> None:
        """A stored lead, found by one of its records' links or by its email."""
        self.plan.rows.setdefault(row.id, row)
        self.email_of.setdefault(row.id, row.email)
        if "link_system" in row._fields:
            self.owner[(row.link_system, row.link_record_id)] = row.id
        elif row.email is not None:
            self.email_owner[row.email] = row.id

    def take(self, event: SourceEvent) -> bool:
        """Add the event to the run, with the events it unparks; False (and the run as it was) if it
        is for `handle`."""
        unparks = any(k in self.waiting for k in _records(event) if k not in self.owner)
        before = self._copy() if unparks else None
        if self._place(event, unparked=None):
            return True
        if before is not None:
            self.__dict__.update(before)
        return False

    def _copy(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "plan": Plan(
                events=list(plan.events),
                kinds=list(plan.kinds),
                leads=list(plan.leads),
                parks=list(plan.parks),
                emails=list(plan.emails),
                links=list(plan.links),
                rows=dict(plan.rows),
                new_leads=list(plan.new_leads),
                unparked_rows=list(plan.unparked_rows),
            ),
            "waiting": {key: list(queue) for key, queue in self.waiting.items()},
            "parked_events": set(self.parked_events),
            "seen": set(self.seen),
            "owner": dict(self.owner),
            "email_owner": dict(self.email_owner),
            "email_of": dict(self.email_of),
        }

    def _place(self, event: SourceEvent, *, unparked: _Waiting | None) -> bool:
        plan = self.plan
        key = (event.source.value, event.idempotency_key)
        if key in self.seen:  # a redelivery: `handle` would stop at the inbox
            if unparked is None:
                plan.add(event, "duplicate", None, None, [], None)
            return True
        if event.event_type in (SourceEventType.DELETED, SourceEventType.MERGED):
            return False
        own = _records(event)
        email = identity.normalized_email(event.changes.email)
        if not own.keys() <= self.records or (email is not None and email not in self.emails):
            return False  # an unparked event naming what was not looked up
        lead_id = next((self.owner[k] for k in own if k in self.owner), None)
        if lead_id is not None and plan.rows[lead_id].merged_into is not None:
            return False
        if lead_id is None and email is not None:
            lead_id = self.email_owner.get(email)
        if lead_id is None and event.object_type in identity.SECONDARY:  # parked until its record is linked
            first = event.id not in self.parked_events
            park = parked_row(event, now=self.now) if first else None
            if first:
                self.waiting.setdefault((event.source.value, event.object_id), []).append(
                    _Waiting(event, index=len(plan.events))
                )
            self.parked_events.add(event.id)
            plan.add(event, "parked", None, None, [], park)  # not in the inbox: handled when unparked
            return True
        new_lead = None
        if lead_id is None:
            new_lead = detached_lead(
                {
                    "id": uuid.uuid4(),
                    "origin_system": event.source.value,
                    "created_at": self.now,
                    "updated_at": self.now,
                }
            )
            lead_id = new_lead.id
        if any(self.owner[k] != lead_id for k in own if k in self.owner):
            return False  # another lead's record joins: `handle` folds that lead in
        gives_email = email if email is not None and self.email_of.get(lead_id) is None else None
        if gives_email is not None and self.email_owner.get(gives_email, lead_id) != lead_id:
            return False  # the email is another lead's: `handle` folds that lead in
        if new_lead is not None:
            plan.new_leads.append(new_lead)
            plan.rows[lead_id] = new_lead
        unlinked = [k for k in own if k not in self.owner]
        new_links = []
        for k in unlinked:
            self.owner[k] = lead_id
            new_links.append(
                {
                    "system": own[k].system.value,
                    "record_id": own[k].record_id,
                    "object_type": own[k].object_type.value,
                    "lead_id": lead_id,
                    "stage_raw": None,
                }
            )
        if gives_email is not None:
            self.email_of[lead_id] = gives_email
            self.email_owner[gives_email] = lead_id
        self.seen.add(key)
        plan.add(event, "unparked" if unparked else "routine", lead_id, gives_email, new_links, None)
        for k in unlinked:  # the events that waited for these records, in the order they were parked
            for waiting in self.waiting.pop(k, []):
                self._unpark(waiting)
                if not self._place(waiting.event, unparked=waiting):
                    return False
        return True

    def _unpark(self, waiting: _Waiting) -> None:
        if waiting.row_id is not None:
            self.plan.unparked_rows.append(waiting.row_id)
        if waiting.index is not None:
            self.plan.parks[waiting.index] = None  # parked and unparked within the run: never stored
        self.parked_events.discard(waiting.event.id)


def _records(event: SourceEvent) -> dict[tuple[str, str], RecordLink]:
    own = RecordLink(system=event.source, object_type=event.object_type, record_id=event.object_id)
    return {(r.system.value, r.record_id): r for r in [own, *event.related]}


async def _leads_of_records(session: AsyncSession, keys: list[tuple[str, str]]) -> list[Row[Any]]:
    """The lead each linked record belongs to, as a plain row with the record's key."""
    link, lead = LeadLinkRow.__table__, LeadRow.__table__  # type: ignore[attr-defined]
    rows = await session.execute(
        select(link.c.system.label("link_system"), link.c.record_id.label("link_record_id"), lead)
        .join(lead, lead.c.id == link.c.lead_id)
        .where(database.pairs_in(link.c.system, link.c.record_id, keys))
    )
    return list(rows)


def _emails(events: list[SourceEvent]) -> set[str]:
    return {e for event in events if (e := identity.normalized_email(event.changes.email)) is not None}


async def _leads_by_email(session: AsyncSession, emails: set[str]) -> list[Row[Any]]:
    if not emails:
        return []
    lead = LeadRow.__table__  # type: ignore[attr-defined]
    return list(
        await session.execute(select(lead).where(lead.c.email.in_(emails), lead.c.merged_into.is_(None)))
    )


async def _parked(
    session: AsyncSession, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], list[_Waiting]]:
    """The events waiting for each of the records, in the order they were parked."""
    parked = ParkedEventRow.__table__  # type: ignore[attr-defined]
    rows = await session.execute(
        select(parked.c.id, parked.c.system, parked.c.record_id, parked.c.payload)
        .where(database.pairs_in(parked.c.system, parked.c.record_id, keys))
        .order_by(parked.c.id)
    )
    waiting: dict[tuple[str, str], list[_Waiting]] = {}
    for row in rows:
        event = from_json(row.payload, SourceEvent)
        waiting.setdefault((row.system, row.record_id), []).append(_Waiting(event, row_id=row.id))
    return waiting


async def _processed(session: AsyncSession, events: list[SourceEvent]) -> set[tuple[str, str]]:
    inbox = InboxRow.__table__  # type: ignore[attr-defined]
    keys = list({(e.source.value, e.idempotency_key) for e in events})
    rows = await session.execute(
        select(inbox.c.source, inbox.c.idempotency_key).where(
            database.pairs_in(inbox.c.source, inbox.c.idempotency_key, keys)
        )
    )
    return {(source, key) for source, key in rows}
