"""GET /v1/velocity: how long leads take from one stage to another - median and 90th percentile.

Definitions:
- leads: the distinct leads whose first entry ever into `from_stage` (a fact `to_stage` = A) lies in
  [from, to) and matches the filters;
- reached: those of them with a later fact `to_stage` = B (`to_stage` parameter; any fact, at or after
  that first entry and before `to`); a lead's time is from its first entry into A to its first entry
  into B after it, in seconds;
- median_seconds and p90_seconds: the 50th and 90th percentiles of those times, interpolated linearly
  between the closest ranks (as PostgreSQL's percentile_cont); null when no lead reached B.
SQL selects each lead's two instants, set-based (SQLite has no percentile function); Python takes the
percentiles.
"""

import inspect
import math
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy import and_, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased
from sqlmodel import col

from onefunnel.metrics.api.formats import ALTERNATIVES, Format, Listing, negotiate, respond
from onefunnel.metrics.api.params import Filters, Window, filters, invalid, window
from onefunnel.metrics.api.reading import reading
from onefunnel.metrics.api.scope import between, matching
from onefunnel.metrics.facts import utc
from onefunnel.metrics.tables import TransitionRow
from onefunnel.shared.stages import Stage


class VelocityRow(BaseModel):
    from_stage: Stage
    to_stage: Stage
    leads: int
    reached: int
    median_seconds: float | None
    p90_seconds: float | None


class VelocityPage(Listing[VelocityRow]):
    window: Window
    filters: Filters


def percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """The `fraction` percentile of sorted values, linearly interpolated (percentile_cont)."""
    if not ordered:
        return None
    rank = fraction * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def durations(
    session: AsyncSession, *, start: Stage, end: Stage, span: Window, filters: Filters
) -> tuple[int, list[float]]:
    """How many leads first entered `start` in the window, and the seconds each that did took to `end`."""
    entry, earlier, later = aliased(TransitionRow), aliased(TransitionRow), aliased(TransitionRow)
    first = func.min(col(entry.occurred_at))
    condition = matching(entry, filters)
    entered = (
        select(col(entry.lead_id).label("lead_id"), first.label("at"))
        .where(col(entry.to_stage) == start.value, *between(entry, span.start, span.end))
        .group_by(col(entry.lead_id))
        # the lead's first entry in the window is the one matching the filters
        .having(first.filter(*condition) == first if condition else true())
        .cte("entered")
    )
    before = (  # an entry before the window: this one is not the lead's first
        select(col(earlier.event_id))
        .where(
            col(earlier.lead_id) == entered.c.lead_id,
            col(earlier.to_stage) == start.value,
            col(earlier.occurred_at) < span.start,
        )
        .exists()
    )
    reached = and_(
        col(later.lead_id) == entered.c.lead_id,
        col(later.to_stage) == end.value,
        col(later.occurred_at) >= entered.c.at,
        *between(later, span.start, span.end),
    )
    query = (
        select(entered.c.at, func.min(col(later.occurred_at)))
        .select_from(entered)
        .outerjoin(later, reached)
        .where(~before)
        .group_by(entered.c.lead_id, entered.c.at)
    )
    rows = (await session.execute(query)).all()
    seconds = [(utc(done) - utc(at)).total_seconds() for at, done in rows if done is not None]
    return len(rows), sorted(seconds)


def routes(sessions: async_sessionmaker[AsyncSession]) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/velocity",
        summary="Median and 90th percentile of the time from one stage to another",
        description=inspect.cleandoc(__doc__ or ""),
        response_model=VelocityPage,
        responses=ALTERNATIVES,
    )
    async def get_velocity(
        request: Request,
        from_stage: Annotated[Stage, Query(description="Stage A, where the clock starts.")],
        to_stage: Annotated[Stage, Query(description="Stage B, where it stops.")],
        span: Annotated[Window, Depends(window)],
        chosen: Annotated[Filters, Depends(filters)],
        format: Annotated[Format, Depends(negotiate)],
    ) -> Response:
        if from_stage == to_stage:
            raise invalid("to_stage", "must differ from `from_stage`", to_stage.value)
        async with reading(sessions) as session:
            leads, seconds = await durations(
                session, start=from_stage, end=to_stage, span=span, filters=chosen
            )
        row = VelocityRow(
            from_stage=from_stage,
            to_stage=to_stage,
            leads=leads,
            reached=len(seconds),
            median_seconds=percentile(seconds, 0.5),
            p90_seconds=percentile(seconds, 0.9),
        )
        listing = VelocityPage(window=span, filters=chosen, rows=[row], next_cursor=None)
        return respond(request, format, listing, row=VelocityRow)

    return router
