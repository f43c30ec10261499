"""The engine's connection settings and the look-up by pairs of values, on both databases."""

from sqlalchemy import Column, MetaData, String, Table, select

from onefunnel.shared.database import create_engine, pairs_in
from onefunnel.shared.settings import DatabaseSettings

PAIRS = Table(
    "pairs", MetaData(), Column("a", String, primary_key=True), Column("b", String, primary_key=True)
)


async def test_pairs_in_matches_exactly_the_pairs_given(database_url: str) -> None:
    engine = create_engine(DatabaseSettings(database_url=database_url))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(PAIRS.metadata.create_all)
            await connection.execute(
                PAIRS.insert(), [{"a": a, "b": b} for a in ("x", "y", "z") for b in ("1", "2", "3")]
            )
            wanted = [("x", "1"), ("y", "2"), ("y", "3"), ("q", "1")]

            async def found(pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
                rows = await connection.execute(
                    select(PAIRS.c.a, PAIRS.c.b).where(pairs_in(PAIRS.c.a, PAIRS.c.b, pairs))
                )
                return {(a, b) for a, b in rows}

            # Not the cross product of the values: ("x", "2") and ("y", "1") are not asked for.
            assert await found(wanted) == {("x", "1"), ("y", "2"), ("y", "3")}
            assert await found([]) == set()
    finally:
        await engine.dispose()


async def test_postgresql_connections_plan_each_statement_for_its_values(postgres_url: str) -> None:
    engine = create_engine(DatabaseSettings(database_url=postgres_url))
    try:
        async with engine.connect() as connection:
            assert (await connection.exec_driver_sql("SHOW plan_cache_mode")).scalar() == "force_custom_plan"
    finally:
        await engine.dispose()
