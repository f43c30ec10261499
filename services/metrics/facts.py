"""The transition facts: each LeadStageChanged stored once, the source of truth for every number.

Prometheus counters reset on restart; the facts do not. The BI API reads only facts, and the
`leads_in_stage` gauge is recomputed from them at start-up.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlmodel import col

from onefunnel.metrics.tables import TransitionRow
from onefunnel.shared.events import LeadStageChanged


@dataclass(frozen=True)
class Counted:
    """A transition new to the facts, with what it means for its lead's current stage."""

    event: LeadStageChanged
    previous: TransitionRow | None  # the lead's fact just before this one, by source time
    is_latest: bool  # this transition is now the lead's most recent one
    replaced_stage: str | None  # the current stage it replaced, when it is the latest


def utc(moment: datetime) -> datetime:
    """SQLite returns stored times without their zone; every stored time is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def record(session: AsyncSession, events: Sequence[LeadStageChanged]) -> list[Counted]:
    """Store the transitions not stored yet (deduplicated by event id) and return those.

    A batch costs three round trips whatever its size: which ids are stored, the facts of the
    batch's leads, and one insert of the new rows. Time in stage and each lead's current stage are
    worked out against those facts and the batch's own earlier transitions, in source-time order.
    """
    ids = {event.id for event in events}
    stored = set(
        (
            await session.scalars(
                select(col(TransitionRow.event_id)).where(col(TransitionRow.event_id).in_(ids))
            )
        ).all()
    )
    fresh = list({event.id: event for event in events if event.id not in stored}.values())
    if not fresh:
        return []
    leads = {event.lead_id for event in fresh}
    known: dict[UUID, list[TransitionRow]] = {}
    for row in (
        await session.scalars(select(TransitionRow).where(col(TransitionRow.lead_id).in_(leads)))
    ).all():
        known.setdefault(row.lead_id, []).append(row)
    counted, rows = [], []
    for event in fresh:
        facts = known.setdefault(event.lead_id, [])
        earlier = [f for f in facts if utc(f.occurred_at) <= event.occurred_at]
        previous = max(earlier, key=lambda f: (utc(f.occurred_at), utc(f.recorded_at)), default=None)
        is_latest = not any(utc(f.occurred_at) > event.occurred_at for f in facts)
        row = TransitionRow(
            event_id=event.id,
            lead_id=event.lead_id,
            from_stage=event.from_stage,
            to_stage=event.to_stage,
            occurred_at=event.occurred_at,
            recorded_at=event.recorded_at,
            cause_system=event.cause.system,
            campaign=event.attribution.campaign,
            lead_source=event.attribution.lead_source,
            origin_system=event.attribution.origin_system,
            owner_id=event.owner_id,
        )
        facts.append(row)
        rows.append(row)
        counted.append(
            Counted(
                event=event,
                previous=previous,
                is_latest=is_latest,
                replaced_stage=previous.to_stage if previous is not None and is_latest else None,
            )
        )
    session.add_all(rows)
    await session.flush()
    return counted


def is_latest() -> ColumnElement[bool]:
    """SQL condition: this fact is its lead's latest transition (by source time, then recording)."""
    newer = aliased(TransitionRow)
    return ~exists().where(
        col(newer.lead_id) == col(TransitionRow.lead_id),
        or_(
            col(newer.occurred_at) > col(TransitionRow.occurred_at),
            and_(
                col(newer.occurred_at) == col(TransitionRow.occurred_at),
                col(newer.recorded_at) > col(TransitionRow.recorded_at),
            ),
        ),
    )


async def leads_per_current_stage(session: AsyncSession) -> dict[str, int]:
    """How many leads are in each stage now: the stage of each lead's latest transition."""
    rows = await session.execute(
        select(col(TransitionRow.to_stage), func.count())
        .where(is_latest())
        .group_by(col(TransitionRow.to_stage))
    )
    return {stage: int(count) for stage, count in rows.all()}
