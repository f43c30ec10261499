"""Handle a consumer batch in one transaction, with a few statements per batch instead of per event.

For a run of events the batch first plans, as `handle` would decide it one event at a time, which
lead each event is about (by its records' links, else by email, else a new lead) and which records
and emails it gives that lead. It then loads at once what the events' decisions depend on (the
leads' histories, links and expected echoes), decides each event in memory in arrival order exactly
as `handle` does, and writes the outcome with a statement per table. An event that would merge,
delete, fold another lead in, or park or unpark events goes through `handle` itself; what follows
it is planned again, since it may have created, joined or split leads.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, case, delete, insert, literal, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from onefunnel.shared.events import ObjectType, RecordLink, SourceEvent, SourceEventType, SourceSystem
from onefunnel.sync import effects, identity
from onefunnel.sync.handler import (
    Conflict,
    Handled,
    Rules,
    Stored,
    audit_row,
    handle,
    history_row,
    into_inbox,
    known_fields,
    load_stored,
    parked_row,
    stage_raw_changed,
)
from onefunnel.sync.reconcile import LeadState, LinkState, Outcome, StageEvent, decide
from onefunnel.sync.tables import ExpectedEchoRow, InboxRow, LeadLinkRow, LeadRow, ParkedEventRow, WriteRow

_ATTRIBUTES = ("stage", "email", "score", "owner_id", "campaign", "lead_source")
LOOKAHEAD = 100  # events whose records are looked up at once
_LEAD_COLUMNS = LeadRow.__table__.columns  # type: ignore[attr-defined]


@dataclass
class _Echo:
    system: SourceSystem
    value: str
    row_id: int | None = None  # stored already; else `pending` is this batch's row, not yet inserted
    pending: ExpectedEchoRow | None = None


@dataclass
class _Lead:
    """A lead as the batch sees it: loaded once, changed by each of its events in turn."""

    row: LeadRow  # detached: written once, at the end, checked against the version it was read at
    history: list[StageEvent]
    links: list[LinkState]
    echoes: list[_Echo]
    events: int = 0
    writes: dict[str, WriteRow] = field(default_factory=dict)  # the batch's newest write per system

    def state(self) -> LeadState:
        return LeadState(
            history=list(self.history),
            known_fields=known_fields(self.row),
            links=list(self.links),
            expected_echoes=[(e.system, e.value) for e in self.echoes],
        )


async def handle_batch(
    session: AsyncSession, events: Sequence[SourceEvent], *, rules: Rules, now: datetime
) -> list[Handled]:
    """Apply `events` in order inside the caller's transaction; the same results as `handle` one by one."""
    handled: list[Handled] = []
    rest = list(events)
    while rest:
        # Planned for the next few events only: after an event `handle` takes, the rest is planned again.
        plan = await _plan(session, rest[:LOOKAHEAD], now=now)
        if plan.events:
            handled += await _apply_routine(session, plan, rules=rules, now=now)
        else:
            handled.append(await handle(session, rest[0], rules=rules, now=now))
        rest = rest[max(len(plan.events), 1) :]
    return handled


@dataclass
class _Plan:
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


async def _plan(session: AsyncSession, events: list[SourceEvent], *, now: datetime) -> _Plan:
    """The longest run of `events` whose leads are told as `handle` tells them, without merging,
    folding, deleting or unparking anything; those are left to `handle`."""
    records = {key: r for e in events for key, r in _records(e).items()}
    linked = await _leads_of_records(session, list(records))
    by_email = await _leads_by_email(session, events)
    parked, parked_events = await _parked(session, [key for key in records if key not in linked])
    seen = await _processed(session, events)
    plan = _Plan()
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


async def _apply_routine(session: AsyncSession, plan: _Plan, *, rules: Rules, now: datetime) -> list[Handled]:
    # The plan told redeliveries (by the inbox, and within the run) and parked events apart: the rest is new.
    routine = [e for e, kind in zip(plan.events, plan.kinds, strict=True) if kind == "routine"]
    if len(await into_inbox(session, routine, now=now)) != len(routine):
        raise Conflict("an event of the batch was handled elsewhere meanwhile")  # the plan may be wrong
    new = {lead.id for lead in plan.new_leads}
    used = list(dict.fromkeys(lead_id for lead_id in plan.leads if lead_id is not None))
    stored = [_detached(plan.rows[lead_id]) for lead_id in used if lead_id not in new]
    loaded = await _load(session, stored, now=now)
    loaded |= {lead.id: _Lead(row=lead, history=[], links=[], echoes=[]) for lead in plan.new_leads}
    if plan.new_leads:
        await session.execute(insert(LeadRow), [_columns(lead) for lead in plan.new_leads])
    handled = []
    consumed: list[int] = []
    raw_values: dict[tuple[str, str], str] = {}
    for event, kind, lead_id, email, links, park in zip(
        plan.events, plan.kinds, plan.leads, plan.emails, plan.links, plan.parks, strict=True
    ):
        if park is not None:
            session.add(park)
        if lead_id is None:
            handled.append(Handled(kind, lead_id=None))
            continue
        lead = loaded[lead_id]
        session.add_all(links)  # linked as `handle` links them: before the event is decided
        lead.links += [
            LinkState(SourceSystem(k.system), ObjectType(k.object_type), k.record_id) for k in links
        ]
        identity.take_attributes(lead.row, event.changes)
        if email is not None:
            lead.row.email = email
        state = lead.state()
        before = lead.row.stage
        decision = decide(state, event, rules.funnel, writable=rules.writable)
        if decision.echo is not None:
            _consume_echo(session, lead, decision.echo, consumed)
        if event.changes.stage_raw is not None and stage_raw_changed(state, event):
            raw_values[(event.source.value, event.object_id)] = event.changes.stage_raw
            lead.links = [
                replace(k, stage_raw=event.changes.stage_raw)
                if (k.system, k.record_id) == (event.source, event.object_id)
                else k
                for k in lead.links
            ]
        if decision.recorded is not None:
            session.add(history_row(lead.row.id, decision.recorded))
            lead.history.append(decision.recorded)
        if decision.outcome is Outcome.APPLIED:
            lead.row.stage = decision.stage
            effects.publish_moves(session, lead.row, event, decision, now=now)
            for write_row, echo_row in effects.enqueue_writes(session, lead.row.id, event, decision, now=now):
                lead.writes[write_row.system] = write_row
                lead.echoes.append(_Echo(SourceSystem(echo_row.system), echo_row.value, pending=echo_row))
        session.add(audit_row(lead.row.id, event, decision, before=before, now=now))
        lead.events += 1
        handled.append(Handled(decision.outcome, lead_id=lead.row.id, decision=decision))
    await _supersede_stored_writes(session, list(loaded.values()))
    if consumed:
        await session.execute(delete(ExpectedEchoRow).where(col(ExpectedEchoRow.id).in_(consumed)))
    if raw_values:
        await session.flush()  # the records linked just now are among them
        link = LeadLinkRow.__table__  # type: ignore[attr-defined]
        await session.execute(
            update(link)
            .where(link.c.system == bindparam("k_system"), link.c.record_id == bindparam("k_record"))
            .values(stage_raw=bindparam("k_raw")),
            [
                {"k_system": system, "k_record": record, "k_raw": raw}
                for (system, record), raw in raw_values.items()
            ],
        )
    await _save_versioned(session, [changed for changed in loaded.values() if changed.events], now=now)
    await session.flush()
    session.expire_all()  # rows `handle` may have loaded before were changed behind the session's back
    return handled


async def _load(session: AsyncSession, leads: list[LeadRow], *, now: datetime) -> dict[uuid.UUID, _Lead]:
    stored = await load_stored(session, [lead.id for lead in leads], now=now)
    loaded = {}
    for lead in leads:
        own = stored.get(lead.id, Stored())
        echoes = [_Echo(system, value, row_id=row_id) for system, value, row_id in own.echoes]
        loaded[lead.id] = _Lead(row=lead, history=own.history, links=own.links, echoes=echoes)
    return loaded


def _consume_echo(
    session: AsyncSession, lead: _Lead, echo: tuple[SourceSystem, str], consumed: list[int]
) -> None:
    """Forget the oldest expected echo the event was, as `effects.consume_echo` does."""
    for i, expected in enumerate(lead.echoes):
        if (expected.system, expected.value) == echo:
            del lead.echoes[i]
            if expected.row_id is not None:
                consumed.append(expected.row_id)
            elif expected.pending is not None:
                session.expunge(expected.pending)
            return


async def _supersede_stored_writes(session: AsyncSession, leads: Sequence[_Lead]) -> None:
    """Only the newest stage per lead and system is written back: every older pending write is superseded."""
    pairs = [(lead.row.id, system) for lead in leads for system in lead.writes]
    if not pairs:
        return
    batch_rows = [row for lead in leads for row in lead.writes.values()]
    await session.flush()  # the batch's rows get their ids
    await session.execute(
        update(WriteRow)
        .where(
            tuple_(col(WriteRow.lead_id), col(WriteRow.system)).in_(pairs),
            col(WriteRow.status) == "pending",
            col(WriteRow.id).not_in([row.id for row in batch_rows]),
        )
        .values(status="superseded")
        .execution_options(synchronize_session=False)
    )


def _detached(row: Row[Any] | LeadRow) -> LeadRow:
    """The lead as an object the batch changes and writes itself, once."""
    return row if isinstance(row, LeadRow) else LeadRow(**{c.name: row._mapping[c] for c in _LEAD_COLUMNS})


def _columns(lead: LeadRow) -> dict[str, object]:
    return {c.name: getattr(lead, c.name) for c in _LEAD_COLUMNS}


async def _save_versioned(session: AsyncSession, leads: list[_Lead], *, now: datetime) -> None:
    """One UPDATE for every lead the batch changed; a lead changed meanwhile fails the batch."""
    if not leads:
        return
    table = LeadRow.__table__  # type: ignore[attr-defined]
    values = {  # bound as the column's type, so PostgreSQL can type NULLs, and refuses what does not fit
        name: case(
            {lead.row.id: literal(getattr(lead.row, name), type_=table.c[name].type) for lead in leads},
            value=table.c.id,
        )
        for name in _ATTRIBUTES
    }
    updated = await session.execute(
        update(table)
        .where(tuple_(table.c.id, table.c.version).in_([(lead.row.id, lead.row.version) for lead in leads]))
        .values(
            **values,
            version=case({lead.row.id: lead.row.version + lead.events for lead in leads}, value=table.c.id),
            updated_at=now,
        )
        .returning(table.c.id)
    )
    if len(updated.all()) != len(leads):
        raise Conflict("a lead of the batch changed concurrently")
