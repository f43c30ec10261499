"""GET /v1/funnel and GET /v1/campaigns/{campaign}: the funnel of a window, or of a campaign since launch."""

import inspect
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from onefunnel.metrics.api import funnel_query, groups
from onefunnel.metrics.api.formats import ALTERNATIVES, Format, Listing, negotiate, respond
from onefunnel.metrics.api.funnel_query import funnel
from onefunnel.metrics.api.funnel_rows import FunnelRow
from onefunnel.metrics.api.groups import GroupBy
from onefunnel.metrics.api.params import Filters, Paging, Window, filters, invalid, paging, window
from onefunnel.metrics.api.periods import Period
from onefunnel.metrics.api.reading import reading
from onefunnel.metrics.facts import utc
from onefunnel.metrics.tables import TransitionRow
from onefunnel.shared.stages import FUNNEL, Stage

_DEFINITIONS = inspect.cleandoc(funnel_query.__doc__ or "")
_BASE = Query(description="The stage overall conversions start from (a funnel stage).")


class FunnelPage(Listing[FunnelRow]):
    window: Window
    filters: Filters
    group_by: GroupBy | None
    base: Stage


class CampaignPage(Listing[FunnelRow]):
    campaign: str
    launched_at: datetime
    window: Window
    group_by: Period | None
    base: Stage


def _funnel_stage(base: Stage) -> Stage:
    if base not in FUNNEL:
        raise invalid("base", f"must be a funnel stage: {', '.join(FUNNEL)}", base.value)
    return base


def routes(sessions: async_sessionmaker[AsyncSession]) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/funnel",
        summary="Entries per stage and stage-to-stage conversions in a time window",
        description=_DEFINITIONS,
        response_model=FunnelPage,
        responses=ALTERNATIVES,
    )
    async def get_funnel(
        request: Request,
        span: Annotated[Window, Depends(window)],
        chosen: Annotated[Filters, Depends(filters)],
        pages: Annotated[Paging, Depends(paging)],
        format: Annotated[Format, Depends(negotiate)],
        group_by: Annotated[
            GroupBy | None, Query(description="One funnel per UTC period or campaign.")
        ] = None,
        base: Annotated[Stage, _BASE] = FUNNEL[0],
    ) -> Response:
        base = _funnel_stage(base)
        async with reading(sessions) as session:
            page = await groups.page(session, group_by=group_by, window=span, filters=chosen, paging=pages)
            rows = await funnel(session, groups=page, end=span.end, filters=chosen, base=base)
        listing = FunnelPage(
            window=span, filters=chosen, group_by=group_by, base=base, rows=rows, next_cursor=page.next_cursor
        )
        return respond(request, format, listing, row=FunnelRow)

    @router.get(
        "/campaigns/{campaign}",
        summary="The live funnel of one campaign, from its first fact until now",
        description="The funnel (see GET /v1/funnel) of the facts attributed to `campaign`, in the window "
        "from its launch (its earliest fact) to now. 404 when no fact names the campaign.",
        response_model=CampaignPage,
        responses={**ALTERNATIVES, 404: {"description": "No fact names this campaign."}},
    )
    async def get_campaign(
        request: Request,
        campaign: Annotated[str, Path(min_length=1, max_length=255)],
        pages: Annotated[Paging, Depends(paging)],
        format: Annotated[Format, Depends(negotiate)],
        group_by: Annotated[Period | None, Query(description="One funnel per UTC period.")] = None,
        base: Annotated[Stage, _BASE] = FUNNEL[0],
    ) -> Response:
        base = _funnel_stage(base)
        chosen = Filters(campaign=campaign)
        async with reading(sessions) as session:
            first = await session.scalar(
                select(func.min(col(TransitionRow.occurred_at))).where(
                    col(TransitionRow.campaign) == campaign
                )
            )
            if first is None:
                raise HTTPException(404, detail=f"no transition is attributed to campaign {campaign!r}")
            launched = utc(first)
            span = Window(start=launched, end=max(datetime.now(UTC), launched + timedelta(microseconds=1)))
            by = None if group_by is None else GroupBy(group_by.value)
            page = await groups.page(session, group_by=by, window=span, filters=chosen, paging=pages)
            rows = await funnel(session, groups=page, end=span.end, filters=chosen, base=base)
        listing = CampaignPage(
            campaign=campaign,
            launched_at=launched,
            window=span,
            group_by=group_by,
            base=base,
            rows=rows,
            next_cursor=page.next_cursor,
        )
        return respond(request, format, listing, row=FunnelRow)

    return router
