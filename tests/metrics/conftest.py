"""An app serving only the BI router, over a migrated database holding the dataset's facts."""

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import async_sessionmaker

from onefunnel.metrics.api import bi_router
from onefunnel.metrics.facts import record
from onefunnel.shared.api_auth import bearer_auth
from onefunnel.shared.database import create_engine, migrate
from onefunnel.shared.settings import DatabaseSettings
from tests.metrics.dataset import transitions

TOKEN = "bi-test-token"


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    """The BI router over the dataset, on SQLite and on PostgreSQL (`database_url`)."""
    engine = create_engine(DatabaseSettings(database_url=database_url))
    await migrate(engine, service="metrics")
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        await record(session, transitions())
    app = FastAPI()
    app.include_router(bi_router(sessions=sessions, auth=bearer_auth([TOKEN, "another-token"])))
    yield app
    await engine.dispose()


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client with a valid token."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://metrics",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        yield client
