"""Each lead's current stage, kept with the facts: the source of the leads-in-stage gauge and the SLA checks.

The same for every replica (it is in the database), and cheap to read: one row per lead instead of
a search for each lead's latest fact among all of them.
"""

from collections.abc import Iterable

from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from onefunnel.metrics.rollup import Fact
from onefunnel.metrics.tables import LeadStageRow
from onefunnel.shared import database

_TABLE = LeadStageRow.__table__  # type: ignore[attr-defined]
_ORDER = ("entered_at", "recorded_at", "event_id")  # which fact is later, as facts.record orders them


async def update(session: AsyncSession, latest: Iterable[Fact]) -> None:
    """Make each fact its lead's current stage, unless a later one is already stored (a replica's)."""
    values = [
        {
            "lead_id": f.lead_id,
            "stage": f.to_stage,
            "entered_at": f.occurred_at,
            "recorded_at": f.recorded_at,
            "event_id": f.event_id,
        }
        for f in sorted(latest, key=lambda f: f.lead_id)  # in key order: concurrent writers never deadlock
    ]
    if not values:
        return
    insert = database.insert(session, LeadStageRow).values(values)
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=["lead_id"],
            set_={name: insert.excluded[name] for name in ("stage", "entered_at", "recorded_at", "event_id")},
            where=tuple_(*(insert.excluded[name] for name in _ORDER))
            > tuple_(*(_TABLE.c[name] for name in _ORDER)),
        )
    )


async def per_stage(session: AsyncSession) -> dict[str, int]:
    """How many leads are in each stage now."""
    rows = await session.execute(
        select(col(LeadStageRow.stage), func.count()).group_by(col(LeadStageRow.stage))
    )
    return {stage: int(count) for stage, count in rows.all()}
