"""GET /v1/cohorts: of the leads entering stage X in each period, the share reaching stage Y within N days.

Definitions:
- the cohort of a period: the distinct leads with a fact `to_stage` = X (`entered`), matching the
  filters, in that period's part of [from, to); a lead's entry is its first such fact in the period
  (a lead entering X in two periods belongs to both cohorts);
- reached: cohort leads with a fact `to_stage` = Y (`reached`, any fact, filters not applied) at or
  after their entry and less than N x 24 hours after it - also after `to`;
- share: reached / entered (null for an empty cohort);
- complete: no lead of the cohort can still reach Y in time (the period's end, or `to`, plus N days
  has passed), so the share is final.
Periods are UTC days, ISO weeks (from Monday) or calendar months, every one the window touches.
"""

import inspect
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased
from sqlmodel import col

from onefunnel.metrics.api.dialects import plus_days
from onefunnel.metrics.api.formats import ALTERNATIVES, Format, Listing, negotiate, respond
from onefunnel.metrics.api.groups import Groups, periods_page
from onefunnel.metrics.api.params import Filters, Paging, Window, filters, invalid, paging, window
from onefunnel.metrics.api.periods import Period, next_period
from onefunnel.metrics.api.reading import reading
from onefunnel.metrics.api.scope import between, matching
from onefunnel.metrics.tables import TransitionRow
from onefunnel.shared.stages import Stage


class CohortRow(BaseModel):
    period: str
    entered: int
    reached: int
    share: float | None
    complete: bool


class CohortPage(Listing[CohortRow]):
    window: Window
    filters: Filters
    entered: Stage
    reached: Stage
    within_days: int
    period: Period


async def cohorts(
    session: AsyncSession,
    *,
    groups: Groups,
    entered: Stage,
    reached: Stage,
    within_days: int,
    filters: Filters,
) -> dict[str, tuple[int, int]]:
    """(entered, reached) per period key of the page."""
    if not groups.keys or groups.key is None:
        return {}
    facts = aliased(TransitionRow)
    cohort = (
        select(
            groups.key(facts).label("g"),
            col(facts.lead_id).label("lead_id"),
            func.min(col(facts.occurred_at)).label("entered_at"),
        )
        .where(col(facts.to_stage) == entered.value, *between(facts, groups.start, groups.end))
        .where(*matching(facts, filters))
        .group_by(groups.key(facts), col(facts.lead_id))
        .cte("cohort")
    )
    later = aliased(TransitionRow)
    in_time = exists().where(
        col(later.lead_id) == cohort.c.lead_id,
        col(later.to_stage) == reached.value,
        col(later.occurred_at) >= cohort.c.entered_at,
        col(later.occurred_at) < plus_days(cohort.c.entered_at, within_days),
        # constant bounds too, so the planner may read Y's entries by the (to_stage, occurred_at) index
        *between(later, groups.start, groups.end + timedelta(days=within_days)),
    )
    sizes = select(cohort.c.g, func.count().label("entered")).group_by(cohort.c.g).subquery("sizes")
    hits = select(cohort.c.g, func.count().label("hits")).where(in_time).group_by(cohort.c.g).subquery("hits")
    result = await session.execute(
        select(sizes.c.g, sizes.c.entered, hits.c.hits).outerjoin(hits, hits.c.g == sizes.c.g)
    )
    return {key: (int(size), int(hit or 0)) for key, size, hit in result}


def _rows(
    found: dict[str, tuple[int, int]], *, keys: list[str], period: Period, end: datetime, within: timedelta
) -> list[CohortRow]:
    now, rows = datetime.now(UTC), []
    for key in keys:
        size, hits = found.get(key, (0, 0))
        # the cohort's last lead may enter at the period's end (or `to`): its share is final N days later
        last_entry = min(next_period(datetime.fromisoformat(f"{key}T00:00:00+00:00"), period), end)
        share = hits / size if size else None
        rows.append(
            CohortRow(
                period=key, entered=size, reached=hits, share=share, complete=last_entry + within <= now
            )
        )
    return rows


def routes(sessions: async_sessionmaker[AsyncSession]) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/cohorts",
        summary="Per period, the leads entering a stage and the share reaching another within N days",
        description=inspect.cleandoc(__doc__ or ""),
        response_model=CohortPage,
        responses=ALTERNATIVES,
    )
    async def get_cohorts(
        request: Request,
        entered: Annotated[Stage, Query(description="Stage X: the cohorts are the leads entering it.")],
        reached: Annotated[Stage, Query(description="Stage Y: the stage a cohort's leads should reach.")],
        span: Annotated[Window, Depends(window)],
        chosen: Annotated[Filters, Depends(filters)],
        pages: Annotated[Paging, Depends(paging)],
        format: Annotated[Format, Depends(negotiate)],
        within_days: Annotated[int, Query(ge=1, le=3650, description="N: days to reach Y.")] = 30,
        period: Annotated[Period, Query(description="Cohort period (UTC).")] = Period.WEEK,
    ) -> Response:
        if entered == reached:
            raise invalid("reached", "must differ from `entered`", reached.value)
        page = periods_page(period, window=span, paging=pages)
        async with reading(sessions) as session:
            found = await cohorts(
                session,
                groups=page,
                entered=entered,
                reached=reached,
                within_days=within_days,
                filters=chosen,
            )
        rows = _rows(found, keys=page.keys, period=period, end=span.end, within=timedelta(days=within_days))
        listing = CohortPage(
            window=span,
            filters=chosen,
            entered=entered,
            reached=reached,
            within_days=within_days,
            period=period,
            rows=rows,
            next_cursor=page.next_cursor,
        )
        return respond(request, format, listing, row=CohortRow)

    return router
