"""The read-only transaction every BI query runs in."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

# Per-lead aggregation over a large window needs a few tens of MB of hash table: with PostgreSQL's
# default work_mem (4MB) it spills to disk. And its cost estimates make the planner JIT-compile,
# which took longer than the query itself. Both settings end with the transaction (is_local).
_POSTGRESQL_TUNING = text("SELECT set_config('work_mem', '64MB', true), set_config('jit', 'off', true)")


@asynccontextmanager
async def reading(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session in one transaction (one consistent view of the facts), tuned for reports."""
    async with sessions() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(_POSTGRESQL_TUNING)
        yield session
