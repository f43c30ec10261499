"""GET /v1/sync/failures: the write-backs a platform refused, for an operator to fix and replay."""

from collections.abc import Callable
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from onefunnel.sync.tables import WriteRow


class Failure(BaseModel):
    id: int
    lead_id: UUID
    system: str
    stage: str
    value: str
    error_code: str | None
    error: str | None
    attempts: int
    created_at: datetime
    failed_at: datetime | None


class FailurePage(BaseModel):
    failures: list[Failure]
    next_cursor: int | None


def failures_router(
    *, sessions: async_sessionmaker[AsyncSession], auth: Callable[[Request], None]
) -> APIRouter:
    router = APIRouter(prefix="/v1/sync", tags=["sync"], dependencies=[Depends(auth)])

    @router.get("/failures", summary="Write-backs that failed permanently")
    async def failures(
        system: Annotated[
            str | None, Query(pattern="^(hubspot|salesforce|marketo|mautic|pipedrive)$")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        cursor: Annotated[int | None, Query(ge=0, description="next_cursor of the previous page")] = None,
    ) -> FailurePage:
        query = (
            select(WriteRow)
            .where(col(WriteRow.status) == "failed")
            .order_by(col(WriteRow.id))
            .limit(limit + 1)
        )
        if system:
            query = query.where(col(WriteRow.system) == system)
        if cursor is not None:
            query = query.where(col(WriteRow.id) > cursor)
        async with sessions() as session:
            rows = (await session.scalars(query)).all()
        page = [
            Failure(
                id=r.id or 0,
                lead_id=r.lead_id,
                system=r.system,
                stage=r.stage,
                value=r.value,
                error_code=r.error_code,
                error=r.last_error,
                attempts=r.attempts,
                created_at=r.created_at,
                failed_at=r.finished_at,
            )
            for r in rows[:limit]
        ]
        return FailurePage(failures=page, next_cursor=page[-1].id if len(rows) > limit else None)

    return router
