"""The transition facts: each LeadStageChanged stored once, the source of truth for every number.

Prometheus counters reset on restart; the facts do not. The BI API reads only facts, and the
`leads_in_stage` gauge is set from each lead's current stage (current.py), kept with them.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from onefunnel.metrics import current, rollup
from onefunnel.metrics.rollup import Fact
from onefunnel.metrics.tables import TransitionRow
from onefunnel.shared.events import LeadStageChanged


@dataclass(frozen=True)
class Counted:
    """A transition new to the facts, with what it means for its lead's current stage."""

    event: LeadStageChanged
    previous: Fact | None  # the lead's fact just before this one, by source time
    is_latest: bool  # this transition is now the lead's most recent one
    replaced_stage: str | None  # the current stage it replaced, when it is the latest


def utc(moment: datetime) -> datetime:
    """SQLite returns stored times without their zone; every stored time is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_TABLE = TransitionRow.__table__  # type: ignore[attr-defined]
_NEXTS = [f"next_{stage}_at" for stage in rollup.LATER]
_STORED = select(
    *(_TABLE.c[name] for name in ("event_id", "lead_id", "to_stage", "occurred_at", "recorded_at")),
    *(_TABLE.c[name] for name in ("campaign", "origin_system", "first_entry", *_NEXTS)),
)
_UPDATE_DERIVED = (  # executemany: bound names must differ from the columns'
    update(_TABLE)
    .where(_TABLE.c.event_id == bindparam("b_event_id"))
    .values({name: bindparam(f"b_{name}") for name in ("first_entry", *_NEXTS)})
)


def _stored(row: Sequence[Any]) -> Fact:
    event_id, lead_id, to_stage, occurred_at, recorded_at, campaign, origin, first, *nexts = row
    derived = (bool(first), tuple(None if n is None else utc(n) for n in nexts))
    return Fact(event_id, lead_id, to_stage, utc(occurred_at), utc(recorded_at), campaign, origin, derived)


async def record(session: AsyncSession, events: Sequence[LeadStageChanged]) -> list[Counted]:
    """Store the transitions not stored yet (deduplicated by event id) and return those.

    A batch costs a few round trips whatever its size: which ids are stored, the facts of the
    batch's leads, one insert of the new rows, one update of the stored rows whose derived columns
    they change, and the rollup's change. Time in stage and each lead's current stage are worked out
    against those facts and the batch's own earlier transitions, in source-time order.
    """
    ids = {event.id for event in events}
    stored = set((await session.scalars(select(_TABLE.c.event_id).where(_TABLE.c.event_id.in_(ids)))).all())
    fresh = list({event.id: event for event in events if event.id not in stored}.values())
    if not fresh:
        return []
    leads = {event.lead_id for event in fresh}
    known: dict[UUID, list[Fact]] = {}
    for stored_row in await session.execute(_STORED.where(_TABLE.c.lead_id.in_(leads))):
        fact = _stored(stored_row)
        known.setdefault(fact.lead_id, []).append(fact)
    counted: list[Counted] = []
    rows: list[dict[str, Any]] = []
    for event in fresh:
        facts = known.setdefault(event.lead_id, [])
        earlier = [f for f in facts if f.occurred_at <= event.occurred_at]
        previous = max(earlier, key=_order, default=None)
        is_latest = not any(f.occurred_at > event.occurred_at for f in facts)
        facts.append(
            Fact(
                event.id,
                event.lead_id,
                event.to_stage.value,
                event.occurred_at,
                event.recorded_at,
                event.attribution.campaign,
                event.attribution.origin_system,
                None,
            )
        )
        rows.append(
            {
                "event_id": event.id,
                "lead_id": event.lead_id,
                "from_stage": event.from_stage,
                "to_stage": event.to_stage,
                "occurred_at": event.occurred_at,
                "recorded_at": event.recorded_at,
                "cause_system": event.cause.system,
                "campaign": event.attribution.campaign,
                "lead_source": event.attribution.lead_source,
                "origin_system": event.attribution.origin_system,
                "owner_id": event.owner_id,
            }
        )
        counted.append(
            Counted(
                event=event,
                previous=previous,
                is_latest=is_latest,
                replaced_stage=previous.to_stage if previous is not None and is_latest else None,
            )
        )
    change: rollup.Change = Counter()
    changed = [fact for lead in leads for fact in rollup.apply(known[lead], change)]
    derived = {fact.event_id: fact.derived for facts in known.values() for fact in facts}
    for row in rows:
        row.update(_columns(derived[row["event_id"]]))
    await session.execute(insert(_TABLE), rows)
    if changed:
        updates = [
            {"b_event_id": f.event_id, **{f"b_{k}": v for k, v in _columns(f.derived).items()}}
            for f in changed
        ]
        await session.execute(_UPDATE_DERIVED, updates)
    await rollup.add(session, change)
    new_ids = {event.id for event in fresh}
    latest = (max(known[lead], key=_order) for lead in leads)
    await current.update(session, (fact for fact in latest if fact.event_id in new_ids))
    return counted


def _order(fact: Fact) -> tuple[datetime, datetime, UUID]:
    """Which of a lead's facts is later: by source time, then by when sync recorded it, then by id."""
    return fact.occurred_at, fact.recorded_at, fact.event_id


def _columns(derived: rollup.Derived | None) -> dict[str, object]:
    assert derived is not None  # rollup.apply derived every fact of the lead
    first, nexts = derived
    return {"first_entry": first, **dict(zip(_NEXTS, nexts, strict=True))}
