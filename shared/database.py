"""The database engine and the per-service migrations.

Each service owns its tables (prefixed with the service name) and its Alembic migrations, kept
in `onefunnel/<service>/migrations` with a version table of its own, so services sharing one
database never step on each other and each can be deployed alone.
"""

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import ColumnElement, MetaData, and_, event, false, make_url, or_, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from onefunnel.shared.settings import DatabaseSettings


def insert(session: AsyncSession, table: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can say ON CONFLICT: both databases support it, each with its own construct."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def pairs_in(first: Any, second: Any, pairs: Iterable[tuple[Any, Any]]) -> ColumnElement[bool]:
    """`(first, second) IN pairs`, as `first = a AND second IN (...)` per value `a` of `first`.

    PostgreSQL turns a row-value IN list whose rows share `first` into an index condition on `first`
    alone and checks every row with that value against the whole list: linear in the table, which
    made the inbox and link look-ups the database's largest cost. Per value of `first`, both columns
    of a two-column index are index conditions.
    """
    grouped: dict[Any, list[Any]] = {}
    for a, b in pairs:
        grouped.setdefault(a, []).append(b)
    if not grouped:
        return false()
    return or_(*(and_(first == a, second.in_(values)) for a, values in grouped.items()))


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    """Create the async engine for `ONEFUNNEL_DATABASE_URL`; nothing connects until first use."""
    url = settings.database_url
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # No pool_pre_ping: with asyncpg it costs BEGIN, `;` and ROLLBACK at every checkout. A connection
    # the server dropped fails once, as a disconnect, and SQLAlchemy then renews the whole pool.
    # Custom plans: asyncpg prepares every statement, and PostgreSQL keeps a prepared statement's
    # generic plan, made for the table's size at the time, until the next ANALYZE. A table that grew
    # from empty (a new install's first backfill) was then scanned whole, once per look-up of a batch.
    server_settings = {"plan_cache_mode": "force_custom_plan"}
    return create_async_engine(
        url, pool_size=10, max_overflow=10, connect_args={"server_settings": server_settings}
    )


@asynccontextmanager
async def generic_plans(session: AsyncSession) -> AsyncIterator[None]:
    """Statements that plan the same whatever their values (INSERTs of many rows), in the caller's
    transaction: PostgreSQL plans them once per connection instead of once per row, as the engine's
    `force_custom_plan` would. The look-ups after the block get the engine's setting back."""
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        await session.execute(text("SET LOCAL plan_cache_mode = auto"))
    yield
    if postgres:  # not on an error: the transaction, and its SET LOCAL with it, is rolled back
        await session.execute(text("SET LOCAL plan_cache_mode TO DEFAULT"))


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


async def database_ready(engine: AsyncEngine) -> bool:
    """Readiness check: the database answers a trivial query."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    return True


def _alembic_config(connection: Connection, service: str) -> Config:
    config = Config()
    config.set_main_option("script_location", f"onefunnel.{service}:migrations")
    config.attributes["connection"] = connection
    config.attributes["version_table"] = f"alembic_version_{service}"
    return config


# Alembic keeps its context in module globals, so one process migrates one service at a time.
_MIGRATING = asyncio.Lock()


async def migrate(engine: AsyncEngine, *, service: str, revision: str = "head") -> None:
    """Upgrade `service`'s tables to `revision`; replicas starting together take turns."""
    async with _MIGRATING, engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"onefunnel:{service}"}
            )
        await connection.run_sync(lambda sync: command.upgrade(_alembic_config(sync, service), revision))


def run_migrations(context: ModuleType, metadata: MetaData) -> None:
    """Body of every service's migrations/env.py: migrate on the connection `migrate` passed in."""
    attributes = context.config.attributes
    context.configure(
        connection=attributes["connection"],
        target_metadata=metadata,
        version_table=attributes["version_table"],
        include_name=only_tables_of(metadata),
        render_as_batch=True,  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


def only_tables_of(metadata: MetaData) -> Callable[[str | None, str, object], bool]:
    """Alembic `include_name` filter: compare only this service's tables, not its neighbours'."""

    def include(name: str | None, type_: str, _parent: object) -> bool:
        return type_ != "table" or name in metadata.tables

    return include
