"""Handle one source event in one database transaction: load the lead, decide, persist the effects.

Everything an event changes is written in the caller's transaction: the inbox row that makes a
redelivery a no-op, the lead's new state (version-checked), its history entry, the audit row,
the outbox rows that carry LeadStageChanged to the bus, the write-back jobs and the echoes they
will cause. Either all of it commits or none of it does; the consumer commits the offset after.
"""

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from onefunnel.shared import database
from onefunnel.shared.events import (
    ObjectType,
    RecordLink,
    SourceEvent,
    SourceEventType,
    SourceSystem,
    from_json,
    to_json,
)
from onefunnel.shared.funnel import Funnel
from onefunnel.shared.stages import Stage
from onefunnel.sync import effects, identity
from onefunnel.sync.reconcile import Decision, LeadState, Outcome, StageEvent, decide, rejoin
from onefunnel.sync.stored import Stored, known_fields, load_stored
from onefunnel.sync.tables import (
    AuditRow,
    ColumnValues,
    ExpectedEchoRow,
    InboxRow,
    LeadLinkRow,
    LeadRow,
    OutboxRow,
    ParkedEventRow,
    StageEventRow,
    WriteRow,
)


class Conflict(Exception):
    """Another transaction changed the same lead first; handle the event again."""


@dataclass(frozen=True)
class Rules:
    """What every event is handled with: the funnel, the systems sync writes to, the delete policy."""

    funnel: Funnel
    writable: Mapping[SourceSystem, ObjectType]
    propagate_deletes: bool = False


@dataclass(frozen=True)
class Handled:
    outcome: str  # an Outcome, or "duplicate"
    lead_id: uuid.UUID | None = None
    decision: Decision | None = None


async def handle(session: AsyncSession, event: SourceEvent, *, rules: Rules, now: datetime) -> Handled:
    """Apply `event` inside the caller's transaction."""
    if not await into_inbox(session, [event], now=now):
        return Handled("duplicate", lead_id=None)

    if event.event_type is SourceEventType.DELETED:
        if rules.propagate_deletes:
            await effects.delete_elsewhere(session, event, writable=rules.writable, now=now)
        lead_id = await identity.unlink(session, event, now=now)
        return Handled(Outcome.NO_OP, lead_id=lead_id)
    found = await identity.find(session, event)
    if found.lead is None and event.object_type in identity.SECONDARY:
        await _park(session, event, now=now)
        return Handled("parked")
    lead, linked = await identity.resolve(session, event, found=found, now=now)
    joined = event.event_type is SourceEventType.MERGED
    if joined:
        await identity.merge(session, event, into=lead, now=now)
    version = lead.version
    joined |= await identity.update_attributes(session, lead, event, now=now)

    state = await _load_state(session, lead, now=now)
    before = lead.stage
    decision = decide(state, event, rules.funnel, writable=rules.writable)
    if joined:  # another lead's history came along: the stage it decides, written where missing
        stage = Stage(before) if before else None
        decision = rejoin(state, stage, decision, rules.funnel, writable=rules.writable)

    if decision.echo is not None:
        await effects.consume_echo(session, lead.id, decision.echo)
    if event.changes.stage_raw is not None and stage_raw_changed(state, event):
        await session.execute(
            update(LeadLinkRow)
            .where(col(LeadLinkRow.system) == event.source, col(LeadLinkRow.record_id) == event.object_id)
            .values(stage_raw=event.changes.stage_raw)
        )
    if decision.recorded is not None:
        session.add(StageEventRow(**history_values(lead.id, decision.recorded)))
    if decision.outcome is Outcome.APPLIED:
        lead.stage = decision.stage
        session.add_all(
            OutboxRow(**values) for values in effects.outbox_values(lead, event, decision, now=now)
        )
        await effects.supersede_older_writes(session, lead.id, decision)
        for job, echo in effects.write_values(lead.id, event, decision, now=now):
            session.add_all([WriteRow(**job), ExpectedEchoRow(**echo)])
    session.add(AuditRow(**audit_values(lead.id, event, decision, before=before, now=now)))
    await _save_versioned(session, lead, expected_version=version, now=now)
    for record in linked:  # events that waited for this record can be placed now
        await _unpark(session, record, rules=rules, now=now)
    return Handled(decision.outcome, lead_id=lead.id, decision=decision)


async def into_inbox(
    session: AsyncSession, events: list[SourceEvent], *, now: datetime
) -> set[tuple[str, str]]:
    """Record the events as processed; the (source, idempotency key) of those that were not already."""
    if not events:
        return set()
    inbox = InboxRow.__table__  # type: ignore[attr-defined]
    # Rows as parameters, not one VALUES list: that statement would be compiled again for every batch.
    inserted = await session.execute(
        database.insert(session, inbox)
        .on_conflict_do_nothing()
        .returning(inbox.c.source, inbox.c.idempotency_key),
        [
            {"source": e.source, "idempotency_key": e.idempotency_key, "event_id": e.id, "processed_at": now}
            for e in events
        ],
    )
    return {(source, key) for source, key in inserted}


def audit_values(
    lead_id: uuid.UUID, event: SourceEvent, decision: Decision, *, before: str | None, now: datetime
) -> ColumnValues:
    """The audit row of a decision, as column values (a batch inserts many at once, without ORM objects)."""
    return {
        "lead_id": lead_id,
        "event_id": event.id,
        "source": event.source,
        "record_id": event.object_id,
        "outcome": decision.outcome,
        "from_stage": before,
        "to_stage": decision.stage if decision.outcome is Outcome.APPLIED else None,
        "reason": decision.reason,
        "occurred_at": event.occurred_at,
        "recorded_at": now,
    }


def stage_raw_changed(state: LeadState, event: SourceEvent) -> bool:
    """Whether the event's record holds another stage value than the event reports (or is unknown)."""
    own = [k for k in state.links if k.system is event.source and k.record_id == event.object_id]
    return not own or any(k.stage_raw != event.changes.stage_raw for k in own)


async def _park(session: AsyncSession, event: SourceEvent, *, now: datetime) -> None:
    """Keep the event (not its inbox row: it is handled when it leaves the car park)."""
    exists = await session.scalar(
        select(col(ParkedEventRow.id)).where(col(ParkedEventRow.event_id) == event.id)
    )
    if exists is None:
        session.add(parked_row(event, now=now))
    await session.execute(
        delete(InboxRow).where(
            col(InboxRow.source) == event.source, col(InboxRow.idempotency_key) == event.idempotency_key
        )
    )


def parked_row(event: SourceEvent, *, now: datetime) -> ParkedEventRow:
    return ParkedEventRow(
        system=event.source,
        record_id=event.object_id,
        event_id=event.id,
        payload=to_json(event).decode(),
        parked_at=now,
    )


async def _unpark(session: AsyncSession, record: RecordLink, *, rules: Rules, now: datetime) -> None:
    parked = (
        await session.scalars(
            select(ParkedEventRow)
            .where(
                col(ParkedEventRow.system) == record.system, col(ParkedEventRow.record_id) == record.record_id
            )
            .order_by(col(ParkedEventRow.id))
        )
    ).all()
    for row in parked:
        await session.delete(row)
        await session.flush()
        await handle(session, from_json(row.payload, SourceEvent), rules=rules, now=now)


async def _load_state(session: AsyncSession, lead: LeadRow, *, now: datetime) -> LeadState:
    stored = (await load_stored(session, [lead.id], now=now)).get(lead.id, Stored())
    return LeadState(
        history=stored.history,
        known_fields=known_fields(lead),
        links=stored.links,
        expected_echoes=[(system, value) for system, value, _ in stored.echoes],
    )


def history_values(lead_id: uuid.UUID, entry: StageEvent) -> ColumnValues:
    """A history entry as column values."""
    return {
        "lead_id": lead_id,
        "event_id": entry.event_id,
        "system": entry.system,
        "stage": entry.stage,
        "raw": entry.raw,
        "score": entry.score,
        "occurred_at": entry.occurred_at,
    }


async def _save_versioned(
    session: AsyncSession, lead: LeadRow, *, expected_version: int, now: datetime
) -> None:
    result = await session.execute(
        update(LeadRow)
        .where(col(LeadRow.id) == lead.id, col(LeadRow.version) == expected_version)
        .values(
            stage=lead.stage,
            email=lead.email,
            score=lead.score,
            owner_id=lead.owner_id,
            campaign=lead.campaign,
            lead_source=lead.lead_source,
            version=expected_version + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"lead {lead.id} changed concurrently")
    lead.version = expected_version + 1
