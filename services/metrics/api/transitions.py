"""GET /v1/transitions and GET /v1/leads/{lead_id}/history: the facts themselves, page by page.

Each fact is one `LeadStageChanged` as stored (deduplicated by `event_id`). Pages are in
(`occurred_at`, `event_id`) order, the cursor holding the last row's pair, so walking the pages
returns every fact once, even while new facts arrive; a fact that arrives late, with an
`occurred_at` before a page already read, is not in that walk: export overlapping windows and
deduplicate on `event_id` to catch those.
"""

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from onefunnel.metrics.api import cursors
from onefunnel.metrics.api.formats import ALTERNATIVES, Format, Listing, negotiate, respond
from onefunnel.metrics.api.params import Filters, Paging, Window, filters, paging, window
from onefunnel.metrics.api.reading import reading
from onefunnel.metrics.api.scope import between, matching
from onefunnel.metrics.facts import utc
from onefunnel.metrics.tables import TransitionRow
from onefunnel.shared.stages import Stage

_KIND = "transition"


class Transition(BaseModel):
    event_id: UUID
    lead_id: UUID
    from_stage: str | None
    to_stage: str
    occurred_at: datetime
    recorded_at: datetime
    cause_system: str
    campaign: str | None
    lead_source: str | None
    origin_system: str | None
    owner_id: str | None


class TransitionPage(Listing[Transition]):
    window: Window
    filters: Filters
    stage: Stage | None


class HistoryPage(Listing[Transition]):
    lead_id: UUID


def _after(token: str | None) -> list[ColumnElement[bool]]:
    """Facts after the cursor's (occurred_at, event_id), in page order."""
    if token is None:
        return []
    moment, event = cursors.decode(token, _KIND, 2)
    try:
        at, event_id = datetime.fromisoformat(moment), UUID(event)
    except ValueError:
        raise cursors.malformed(token) from None
    if at.tzinfo is None:
        raise cursors.malformed(token)
    at, occurred, key = at.astimezone(UTC), col(TransitionRow.occurred_at), col(TransitionRow.event_id)
    # the first condition alone lets an (occurred_at, ...) index start the scan at the cursor
    return [occurred >= at, or_(occurred > at, and_(occurred == at, key > event_id))]


async def _page(
    session: AsyncSession, conditions: list[ColumnElement[bool]], paging: Paging
) -> tuple[list[Transition], str | None]:
    """A page of the facts meeting `conditions` and the cursor of the next (None: this was the last)."""
    query = (
        select(TransitionRow)
        .where(*conditions, *_after(paging.cursor))
        .order_by(col(TransitionRow.occurred_at), col(TransitionRow.event_id))
        .limit(paging.limit + 1)
    )
    found = list((await session.scalars(query)).all())
    rows = [
        Transition(**{**r.model_dump(), "occurred_at": utc(r.occurred_at), "recorded_at": utc(r.recorded_at)})
        for r in found[: paging.limit]
    ]
    if len(found) <= paging.limit:
        return rows, None
    return rows, cursors.encode(_KIND, rows[-1].occurred_at.isoformat(), str(rows[-1].event_id))


def routes(sessions: async_sessionmaker[AsyncSession]) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/transitions",
        summary="The raw transition facts, for export into a warehouse",
        description=__doc__ or "",
        response_model=TransitionPage,
        responses=ALTERNATIVES,
    )
    async def get_transitions(
        request: Request,
        span: Annotated[Window, Depends(window)],
        chosen: Annotated[Filters, Depends(filters)],
        pages: Annotated[Paging, Depends(paging)],
        format: Annotated[Format, Depends(negotiate)],
        stage: Annotated[Stage | None, Query(description="Only facts entering this stage.")] = None,
    ) -> Response:
        conditions = [*between(TransitionRow, span.start, span.end), *matching(TransitionRow, chosen)]
        if stage is not None:
            conditions.append(col(TransitionRow.to_stage) == stage.value)
        async with reading(sessions) as session:
            rows, next_cursor = await _page(session, conditions, pages)
        listing = TransitionPage(window=span, filters=chosen, stage=stage, rows=rows, next_cursor=next_cursor)
        return respond(request, format, listing, row=Transition)

    @router.get(
        "/leads/{lead_id}/history",
        summary="The audit trail of one lead: its transitions as the facts hold them",
        description="Every stored transition of the lead, oldest first. 404 when the facts hold none.",
        response_model=HistoryPage,
        responses={**ALTERNATIVES, 404: {"description": "No transition of this lead is stored."}},
    )
    async def get_history(
        request: Request,
        lead_id: UUID,
        pages: Annotated[Paging, Depends(paging)],
        format: Annotated[Format, Depends(negotiate)],
    ) -> Response:
        async with reading(sessions) as session:
            rows, next_cursor = await _page(session, [col(TransitionRow.lead_id) == lead_id], pages)
        if not rows and pages.cursor is None:
            raise HTTPException(404, detail=f"no transition of lead {lead_id} is stored")
        return respond(
            request, format, HistoryPage(lead_id=lead_id, rows=rows, next_cursor=next_cursor), row=Transition
        )

    return router
