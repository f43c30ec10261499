"""Handle a consumer batch in one transaction, with a few statements per batch instead of per event.

For a run of events the batch first plans (batch_plan.py) which lead each event is about, and which
records and emails it gives that lead. It then loads at once what the events' decisions depend on
(stored.py), decides each event in memory in arrival order exactly as `handle` does, and writes the
outcome with a statement per table. An event that would merge, delete or fold another lead in goes
through `handle` itself; what follows it is planned again, since it may have created, joined or
split leads.
"""

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Case, Row, and_, bindparam, case, delete, insert, or_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningUpdate
from sqlmodel import col

from onefunnel.shared import database
from onefunnel.shared.events import ObjectType, SourceEvent, SourceSystem
from onefunnel.sync import effects, identity
from onefunnel.sync.batch_plan import Plan, plan_run
from onefunnel.sync.handler import (
    Conflict,
    Handled,
    Rules,
    audit_values,
    handle,
    history_values,
    into_inbox,
    stage_raw_changed,
)
from onefunnel.sync.reconcile import LeadState, LinkState, Outcome, StageEvent, decide
from onefunnel.sync.stored import Stored, known_fields, load_stored
from onefunnel.sync.tables import (
    LEAD_COLUMNS,
    AuditRow,
    ColumnValues,
    ExpectedEchoRow,
    LeadLinkRow,
    LeadRow,
    OutboxRow,
    ParkedEventRow,
    StageEventRow,
    WriteRow,
    detached_lead,
)

_ATTRIBUTES = ("stage", "email", "score", "owner_id", "campaign", "lead_source")
LOOKAHEAD = 100  # events whose records are looked up at once


@dataclass
class _Echo:
    system: SourceSystem
    value: str
    row_id: int | None = None  # stored already; else `pending` is this batch's row, not yet inserted
    pending: ColumnValues | None = None


@dataclass
class _Lead:
    """A lead as the batch sees it: loaded once, changed by each of its events in turn."""

    row: LeadRow  # detached: written once, at the end, checked against the version it was read at
    history: list[StageEvent]
    links: list[LinkState]
    echoes: list[_Echo]
    events: int = 0
    writes: dict[str, ColumnValues] = field(default_factory=dict)  # the batch's newest write per system

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
        plan = await plan_run(session, rest[:LOOKAHEAD], now=now)
        if plan.events:
            handled += await _apply_routine(session, plan, rules=rules, now=now)
        else:
            handled.append(await handle(session, rest[0], rules=rules, now=now))
        rest = rest[max(plan.taken, 1) :]
    return handled


async def _apply_routine(session: AsyncSession, plan: Plan, *, rules: Rules, now: datetime) -> list[Handled]:
    # The plan told redeliveries (by the inbox, and within the run) and parked events apart: the rest is new.
    routine = [e for e, kind in zip(plan.events, plan.kinds, strict=True) if kind in ("routine", "unparked")]
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
    links: list[ColumnValues] = []  # inserted at once, without ORM objects
    audits: list[ColumnValues] = []
    histories: list[ColumnValues] = []
    outbox: list[ColumnValues] = []
    jobs: list[ColumnValues] = []
    echoes: list[ColumnValues] = []
    consumed: list[int] = []  # stored echoes the batch's events were; pending ones leave `echoes`
    raw_values: dict[tuple[str, str], str] = {}
    for event, kind, lead_id, email, new_links, park in zip(
        plan.events, plan.kinds, plan.leads, plan.emails, plan.links, plan.parks, strict=True
    ):
        if park is not None:
            session.add(park)
        if lead_id is None:
            handled.append(Handled(kind, lead_id=None))
            continue
        lead = loaded[lead_id]
        links += new_links  # linked as `handle` links them: before the event is decided
        lead.links += [
            LinkState(SourceSystem(k["system"]), ObjectType(k["object_type"]), k["record_id"])
            for k in new_links
        ]
        identity.take_attributes(lead.row, event.changes)
        if email is not None:
            lead.row.email = email
        state = lead.state()
        before = lead.row.stage
        decision = decide(state, event, rules.funnel, writable=rules.writable)
        if decision.echo is not None:
            _consume_echo(lead, decision.echo, consumed, echoes)
        if event.changes.stage_raw is not None and stage_raw_changed(state, event):
            raw_values[(event.source.value, event.object_id)] = event.changes.stage_raw
            lead.links = [
                replace(k, stage_raw=event.changes.stage_raw)
                if (k.system, k.record_id) == (event.source, event.object_id)
                else k
                for k in lead.links
            ]
        if decision.recorded is not None:
            histories.append(history_values(lead.row.id, decision.recorded))
            lead.history.append(decision.recorded)
        if decision.outcome is Outcome.APPLIED:
            lead.row.stage = decision.stage
            outbox += effects.outbox_values(lead.row, event, decision, now=now)
            for job, echo in effects.write_values(lead.row.id, event, decision, now=now):
                if (older := lead.writes.get(job["system"])) is not None:
                    older["status"] = "superseded"  # as the next event's `handle` would supersede it
                lead.writes[job["system"]] = job
                jobs.append(job)
                echoes.append(echo)
                lead.echoes.append(_Echo(SourceSystem(echo["system"]), echo["value"], pending=echo))
        audits.append(audit_values(lead.row.id, event, decision, before=before, now=now))
        lead.events += 1
        if kind == "routine":  # an unparked event was counted when it was parked
            handled.append(Handled(decision.outcome, lead_id=lead.row.id, decision=decision))
    await _supersede_stored_writes(session, list(loaded.values()))  # before the batch's own go in
    by_record = {(k["system"], k["record_id"]): k for k in links}
    for key in [key for key in raw_values if key in by_record]:  # linked in this batch: inserted with it
        by_record[key]["stage_raw"] = raw_values.pop(key)
    tables = (
        (LeadLinkRow, links),
        (AuditRow, audits),
        (StageEventRow, histories),
        (OutboxRow, outbox),
        (WriteRow, jobs),
        (ExpectedEchoRow, echoes),
    )
    async with database.generic_plans(session):
        for table, rows in tables:
            if rows:
                await session.execute(insert(table.__table__), rows)  # type: ignore[union-attr]
    if plan.unparked_rows:
        await session.execute(delete(ParkedEventRow).where(col(ParkedEventRow.id).in_(plan.unparked_rows)))
    if consumed:
        await session.execute(delete(ExpectedEchoRow).where(col(ExpectedEchoRow.id).in_(consumed)))
    if raw_values:  # records linked by earlier batches
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
    lead: _Lead, echo: tuple[SourceSystem, str], consumed: list[int], echoes: list[ColumnValues]
) -> None:
    """Forget the oldest expected echo the event was, as `effects.consume_echo` does."""
    for i, expected in enumerate(lead.echoes):
        if (expected.system, expected.value) == echo:
            del lead.echoes[i]
            if expected.row_id is not None:
                consumed.append(expected.row_id)
            elif expected.pending is not None:
                echoes[:] = [row for row in echoes if row is not expected.pending]
            return


async def _supersede_stored_writes(session: AsyncSession, leads: Sequence[_Lead]) -> None:
    """Only the newest stage per lead and system is written back: the stored pending writes of every lead and
    system the batch writes to are superseded (the batch's own older ones already are)."""
    pairs = [(system, lead.row.id) for lead in leads for system in lead.writes]
    if not pairs:
        return
    await session.execute(
        update(WriteRow)
        .where(
            database.pairs_in(col(WriteRow.system), col(WriteRow.lead_id), pairs),
            col(WriteRow.status) == "pending",
        )
        .values(status="superseded")
        .execution_options(synchronize_session=False)
    )


def _detached(row: Row[Any] | LeadRow) -> LeadRow:
    """The lead as an object the batch changes and writes itself, once."""
    if isinstance(row, LeadRow):
        return row
    return detached_lead({c.name: row._mapping[c] for c in LEAD_COLUMNS})


def _columns(lead: LeadRow) -> ColumnValues:
    return {c.name: getattr(lead, c.name) for c in LEAD_COLUMNS}


async def _save_versioned(session: AsyncSession, leads: list[_Lead], *, now: datetime) -> None:
    """One UPDATE for every lead the batch changed; a lead changed meanwhile fails the batch."""
    if not leads:
        return
    params: ColumnValues = {"updated_at": now}
    for i, lead in enumerate(leads):
        params |= {f"id_{i}": lead.row.id, f"version_{i}": lead.row.version}
        params[f"new_version_{i}"] = lead.row.version + lead.events
        params |= {f"{name}_{i}": getattr(lead.row, name) for name in _ATTRIBUTES}
    updated = await session.execute(_versioned_update(len(leads)), params)
    if len(updated.all()) != len(leads):
        raise Conflict("a lead of the batch changed concurrently")


@functools.cache
def _versioned_update(leads: int) -> ReturningUpdate[tuple[uuid.UUID]]:
    """The UPDATE of `leads` leads, built once per count: only its parameters change from batch to batch.

    Each value is bound as its column's type, so that PostgreSQL can type NULLs and refuses what does not fit.
    """
    table = LeadRow.__table__  # type: ignore[attr-defined]
    ids = [bindparam(f"id_{i}", type_=table.c.id.type) for i in range(leads)]

    def per_lead(name: str, column: str) -> Case[Any]:
        return case(
            {ids[i]: bindparam(f"{name}_{i}", type_=table.c[column].type) for i in range(leads)},
            value=table.c.id,
        )

    versions = [bindparam(f"version_{i}", type_=table.c.version.type) for i in range(leads)]
    return (
        update(table)
        .where(or_(*(and_(table.c.id == ids[i], table.c.version == versions[i]) for i in range(leads))))
        .values(
            **{name: per_lead(name, name) for name in _ATTRIBUTES},
            version=per_lead("new_version", "version"),
            updated_at=bindparam("updated_at", type_=table.c.updated_at.type),
        )
        .returning(table.c.id)
    )
