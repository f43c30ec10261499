"""Assemble the BI API: every endpoint under /v1, behind the bearer-token check."""

from collections.abc import Callable

from fastapi import APIRouter, Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from onefunnel.metrics.api import cohorts, funnel, transitions, velocity

_AUTH_RESPONSES: dict[int | str, dict[str, str]] = {
    401: {"description": "No bearer token, or not one of ONEFUNNEL_API_TOKENS (`WWW-Authenticate: Bearer`)."},
    422: {"description": "A parameter is invalid: `detail[].loc` names it and `detail[].msg` says why."},
}


def bi_router(*, sessions: async_sessionmaker[AsyncSession], auth: Callable[[Request], None]) -> APIRouter:
    """The read-only BI endpoints; `auth` admits a request (e.g. `bearer_auth(tokens)`)."""
    router = APIRouter(prefix="/v1", tags=["bi"], dependencies=[Depends(auth)], responses=_AUTH_RESPONSES)
    for feature in (funnel, cohorts, velocity, transitions):
        router.include_router(feature.routes(sessions))
    return router
