"""Each service's migrations build exactly the tables its models describe, on SQLite and PostgreSQL."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import Connection

from onefunnel.metrics.tables import metadata as metrics_metadata
from onefunnel.shared.database import create_engine, migrate, only_tables_of
from onefunnel.shared.settings import DatabaseSettings
from onefunnel.sync.tables import metadata as sync_metadata

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVICES = {"sync": sync_metadata, "metrics": metrics_metadata}


def _table_names(connection: Connection) -> list[str]:
    return inspect(connection).get_table_names()


def _differences(connection: Connection, metadata: MetaData) -> list[object]:
    opts = {"compare_type": True, "include_name": only_tables_of(metadata)}
    context = MigrationContext.configure(connection, opts=opts)
    return list(compare_metadata(context, metadata))


async def test_migrating_an_empty_database_creates_every_table_the_models_describe(database_url: str) -> None:
    engine = create_engine(DatabaseSettings(database_url=database_url))
    try:
        for service in SERVICES:
            await migrate(engine, service=service)

        async with engine.connect() as connection:
            tables = set(await connection.run_sync(_table_names))
            for service, metadata in SERVICES.items():
                assert set(metadata.tables) <= tables
                assert f"alembic_version_{service}" in tables
                differences = await connection.run_sync(_differences, metadata)
                assert differences == [], f"{service}: migrations and models differ"
    finally:
        await engine.dispose()


async def test_migrating_twice_changes_nothing(database_url: str) -> None:
    engine = create_engine(DatabaseSettings(database_url=database_url))
    try:
        await migrate(engine, service="sync")
        await migrate(engine, service="sync")
        async with engine.connect() as connection:
            differences = await connection.run_sync(_differences, sync_metadata)
        assert differences == []
    finally:
        await engine.dispose()
