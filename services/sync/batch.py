"""Handle a consumer batch in one transaction, with a few statements per batch instead of per event.

Most events of a running funnel are about a record sync already links to a lead: a stage, score,
owner or attribution change. For a run of such events the batch loads at once what `handle` would
read one event at a time (the records' leads, the leads' histories, links and expected echoes),
decides each event in memory in arrival order exactly as `handle` does, and writes the outcome with
a statement per table. Any other event (a record not linked yet, a lead's first email, a merge, a
deletion) goes through `handle` itself; what follows it is loaded again, since it may have created,
joined or split leads.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, case, cast, delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from onefunnel.shared.events import SourceEvent, SourceEventType, SourceSystem
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
    stage_raw_changed,
)
from onefunnel.sync.reconcile import LeadState, LinkState, Outcome, StageEvent, decide
from onefunnel.sync.tables import ExpectedEchoRow, LeadLinkRow, LeadRow, WriteRow

_ATTRIBUTES = ("stage", "email", "score", "owner_id", "campaign", "lead_source")
LOOKAHEAD = 100  # events whose records are looked up at once


@dataclass
class _Echo:
    system: SourceSystem
    value: str
    row_id: int | None = None  # stored already; else `pending` is this batch's row, not yet inserted
    pending: ExpectedEchoRow | None = None


@dataclass
class _Lead:
    """A lead as the batch sees it: loaded once, changed by each of its events in turn."""

    row: LeadRow  # detached: written once, at the end, version-checked
    version: int
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
        # Looked up for the next few events only: after an event `handle` takes, the rest is looked up again.
        leads = await _leads_of_records(session, rest[:LOOKAHEAD])
        routine = 0
        while routine < min(len(rest), LOOKAHEAD) and _lead_of(rest[routine], leads) is not None:
            routine += 1
        if routine:
            handled += await _apply_routine(session, rest[:routine], leads, rules=rules, now=now)
        elif rest:
            handled.append(await handle(session, rest[0], rules=rules, now=now))
            routine = 1
        rest = rest[routine:]
    return handled


def _records(event: SourceEvent) -> list[tuple[str, str]]:
    return [(event.source.value, event.object_id), *((r.system.value, r.record_id) for r in event.related)]


async def _leads_of_records(
    session: AsyncSession, events: list[SourceEvent]
) -> dict[tuple[str, str], Row[Any]]:
    """The lead each linked record of the events belongs to, as a plain row."""
    keys = list({key for event in events for key in _records(event)})
    link, lead = LeadLinkRow.__table__, LeadRow.__table__  # type: ignore[attr-defined]
    rows = await session.execute(
        select(link.c.system.label("link_system"), link.c.record_id.label("link_record_id"), lead)
        .join(lead, lead.c.id == link.c.lead_id)
        .where(tuple_(link.c.system, link.c.record_id).in_(keys))
    )
    return {(r.link_system, r.link_record_id): r for r in rows}


def _lead_of(event: SourceEvent, leads: dict[tuple[str, str], Row[Any]]) -> Row[Any] | None:
    """The lead of a routine event: every record it names linked to one live lead, nothing to join."""
    if event.event_type in (SourceEventType.DELETED, SourceEventType.MERGED):
        return None
    found = [leads.get(key) for key in _records(event)]
    lead = found[0]
    if lead is None or lead.merged_into is not None or any(f is None or f.id != lead.id for f in found):
        return None
    if identity.normalized_email(event.changes.email) is not None and lead.email is None:
        return None  # the email may be another lead's: `handle` joins them
    return lead


async def _apply_routine(
    session: AsyncSession,
    events: list[SourceEvent],
    leads: dict[tuple[str, str], Row[Any]],
    *,
    rules: Rules,
    now: datetime,
) -> list[Handled]:
    fresh = await _into_inbox(session, events, now=now)
    columns = LeadRow.__table__.columns  # type: ignore[attr-defined]
    ours = {  # detached: the batch writes them itself, once
        row.id: LeadRow(**{c.name: row._mapping[c] for c in columns})
        for e in events
        if (row := _lead_of(e, leads)) is not None
    }
    loaded = await _load(session, list(ours.values()), now=now)
    handled = []
    consumed: list[int] = []
    raw_values: dict[tuple[str, str], str] = {}
    for event, is_fresh in zip(events, fresh, strict=True):
        if not is_fresh:
            handled.append(Handled("duplicate", lead_id=None))
            continue
        lead = loaded[leads[_records(event)[0]].id]
        identity.take_attributes(lead.row, event.changes)
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


async def _into_inbox(session: AsyncSession, events: list[SourceEvent], *, now: datetime) -> list[bool]:
    """Which events are new (the first of a key that repeats within the batch included)."""
    seen: set[tuple[str, str]] = set()
    first = []
    for event in events:
        key = (event.source.value, event.idempotency_key)
        first.append(key not in seen)
        seen.add(key)
    new = await into_inbox(session, [e for e, f in zip(events, first, strict=True) if f], now=now)
    return [f and (e.source.value, e.idempotency_key) in new for e, f in zip(events, first, strict=True)]


async def _load(session: AsyncSession, leads: list[LeadRow], *, now: datetime) -> dict[uuid.UUID, _Lead]:
    stored = await load_stored(session, [lead.id for lead in leads], now=now)
    loaded = {}
    for lead in leads:
        own = stored.get(lead.id, Stored())
        echoes = [_Echo(system, value, row_id=row_id) for system, value, row_id in own.echoes]
        loaded[lead.id] = _Lead(
            row=lead, version=lead.version, history=own.history, links=own.links, echoes=echoes
        )
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


async def _save_versioned(session: AsyncSession, leads: list[_Lead], *, now: datetime) -> None:
    """One UPDATE for every lead the batch changed; a lead changed meanwhile fails the batch."""
    if not leads:
        return
    table = LeadRow.__table__  # type: ignore[attr-defined]
    values = {  # each typed as its column: PostgreSQL cannot type a CASE of NULLs by itself
        name: cast(
            case({lead.row.id: getattr(lead.row, name) for lead in leads}, value=table.c.id),
            table.c[name].type,
        )
        for name in _ATTRIBUTES
    }
    updated = await session.execute(
        update(table)
        .where(tuple_(table.c.id, table.c.version).in_([(lead.row.id, lead.version) for lead in leads]))
        .values(
            **values,
            version=case({lead.row.id: lead.version + lead.events for lead in leads}, value=table.c.id),
            updated_at=now,
        )
        .returning(table.c.id)
    )
    if len(updated.all()) != len(leads):
        raise Conflict("a lead of the batch changed concurrently")
