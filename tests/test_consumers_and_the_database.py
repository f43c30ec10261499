"""Sync's and metrics' consumers park an event the database refuses, and park nothing while it is down.

A poison message is dead-lettered so its partition moves on; but an event that fails because
PostgreSQL is unreachable is no poison: the loop stops without committing (its supervisor restarts
it), and once the database is back the same events are handled, none of them parked.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool
from sqlmodel import col

from onefunnel.metrics.consumer import run_counter
from onefunnel.metrics.tables import TransitionRow
from onefunnel.shared import envelope
from onefunnel.shared.bus import Bus, Message, OutgoingMessage, open_bus
from onefunnel.shared.database import create_engine, migrate
from onefunnel.shared.events import (
    Attribution,
    Cause,
    Changes,
    LeadStageChanged,
    ObjectType,
    SourceEvent,
    SourceEventType,
    SourceSystem,
)
from onefunnel.shared.funnel import load_funnel
from onefunnel.shared.settings import BusKind, BusSettings, DatabaseSettings, TopicSettings
from onefunnel.shared.stages import Stage
from onefunnel.sync import instruments as sync_instruments
from onefunnel.sync.consumer import run_consumer
from onefunnel.sync.handler import Rules
from onefunnel.sync.tables import InboxRow
from tests.conftest import PostgresServer, own_postgres_server

TOPICS = TopicSettings(topic_source_events="events", topic_stage_changes="changes", topic_dead_letters="dead")
RULES = Rules(
    funnel=load_funnel(),
    writable={SourceSystem.HUBSPOT: ObjectType.CONTACT, SourceSystem.SALESFORCE: ObjectType.LEAD},
)


def source_event(contact: str, **changes: str) -> SourceEvent:
    now = datetime.now(UTC)
    return SourceEvent(
        id=uuid.uuid4(),
        idempotency_key=f"key-{contact}",
        source=SourceSystem.HUBSPOT,
        object_type=ObjectType.CONTACT,
        object_id=contact,
        event_type=SourceEventType.CREATED,
        changes=msgspec.structs.replace(Changes(stage=Stage.LEAD, stage_raw="lead"), **changes),
        occurred_at=now,
        received_at=now,
    )


def transition(campaign: str = "spring") -> LeadStageChanged:
    now = datetime.now(UTC)
    return LeadStageChanged(
        id=uuid.uuid4(),
        lead_id=uuid.uuid4(),
        from_stage=None,
        to_stage=Stage.LEAD,
        occurred_at=now,
        recorded_at=now,
        cause=Cause(
            system=SourceSystem.HUBSPOT, source_event_id=uuid.uuid4(), event_type=SourceEventType.CREATED
        ),
        attribution=Attribution(campaign=campaign),
    )


@asynccontextmanager
async def server_database_and_bus(
    tmp_path: Path, *, name: str
) -> AsyncIterator[tuple[PostgresServer, AsyncEngine, Bus]]:
    """A PostgreSQL server of the test's own (to stop and start) with sync's and metrics' tables; a bus."""
    with own_postgres_server() as server:
        connection = await asyncpg.connect(server.url)
        await connection.execute(f"CREATE DATABASE {name}")
        await connection.close()
        engine = create_engine(DatabaseSettings(database_url=server.url.rsplit("/", 1)[0] + f"/{name}"))
        await migrate(engine, service="sync")
        await migrate(engine, service="metrics")
        bus_settings = BusSettings(bus=BusKind.LOCAL, local_bus_path=tmp_path / "bus.sqlite3")
        try:
            async with open_bus(bus_settings, topics=TOPICS.all) as bus:
                yield server, engine, bus
        finally:
            await engine.dispose()


async def count(engine: AsyncEngine, table: type) -> int:
    """Counted on a connection of its own: the pool's connections die when a test restarts the server, and the
    consumers, not this observer, are what must live through that."""
    observer = create_async_engine(engine.url, poolclass=NullPool)
    try:
        async with observer.connect() as connection:
            return int(await connection.scalar(select(func.count()).select_from(table)) or 0)
    finally:
        await observer.dispose()


async def parked(bus: Bus) -> list[Message]:
    found: list[Message] = []
    async with bus.subscribe([TOPICS.topic_dead_letters], group=f"reader-{uuid.uuid4().hex}") as reader:
        async for batch in reader.batches(max_wait=0.2):
            if not batch:
                return found
            found += batch
    return found


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(60):
        while not await condition():  # noqa: ASYNC110 (the state is in the database: poll it)
            await asyncio.sleep(0.1)


def consumers(bus: Bus, engine: AsyncEngine) -> list[asyncio.Task[None]]:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    return [
        asyncio.create_task(
            run_consumer(
                bus=bus, topics=TOPICS, group="sync", sessions=sessions, rules=RULES, on_change=lambda: None
            )
        ),
        asyncio.create_task(
            run_counter(bus=bus, topics=TOPICS, group="metrics", sessions=sessions, campaigns=frozenset())
        ),
    ]


async def stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_an_event_in_a_batch_the_database_refuses_is_parked_alone_and_the_rest_applied_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """The batch's transaction fails and is rolled back; one event per transaction, the poison one parked."""
    engine = create_engine(DatabaseSettings(database_url=postgres_url))
    await migrate(engine, service="sync")
    messages = [
        envelope.encode(source_event("1"), source="/test"),
        OutgoingMessage(key=b"2", value=b"not an event", headers=()),
        envelope.encode(source_event("3" * 300), source="/test"),  # longer than sync_lead_link.record_id
        envelope.encode(source_event("4"), source="/test"),
    ]
    async with open_bus(
        BusSettings(bus=BusKind.LOCAL, local_bus_path=tmp_path / "bus.sqlite3"), topics=TOPICS.all
    ) as bus:
        await bus.publish(TOPICS.topic_source_events, messages)
        fallbacks = _fallbacks("error")
        tasks = consumers(bus, engine)[:1]

        async def applied_and_parked() -> bool:
            return await count(engine, InboxRow) == 2 and len(await parked(bus)) == 2

        try:
            await until(applied_and_parked)
        finally:
            await stop(tasks)
        dead = await parked(bus)
        async with bus.subscribe([TOPICS.topic_source_events], group="sync") as subscription:
            lag = await subscription.lag()
    async with engine.connect() as connection:
        keys = sorted((await connection.scalars(select(col(InboxRow.idempotency_key)))).all())
    await engine.dispose()

    assert keys == ["key-1", "key-4"]
    assert _fallbacks("error") == fallbacks + 1
    assert sorted(dict(m.headers)["onefunnel_reason"].split(b":")[0] for m in dead) == [
        b"undecodable",
        b"unprocessable",
    ]
    assert lag == 0  # every offset committed, the parked ones too


async def test_a_transition_the_database_refuses_is_parked_and_the_rest_counted(
    postgres_url: str, tmp_path: Path
) -> None:
    engine = create_engine(DatabaseSettings(database_url=postgres_url))
    await migrate(engine, service="metrics")
    poison = transition(campaign="c" * 300)  # longer than metrics_stage_transition.campaign
    async with open_bus(
        BusSettings(bus=BusKind.LOCAL, local_bus_path=tmp_path / "bus.sqlite3"), topics=TOPICS.all
    ) as bus:
        await bus.publish(
            TOPICS.topic_stage_changes,
            [envelope.encode(e, source="/test") for e in (transition(), poison, transition())],
        )
        tasks = consumers(bus, engine)[1:]

        async def counted_and_parked() -> bool:
            return await count(engine, TransitionRow) == 2 and len(await parked(bus)) == 1

        try:
            await until(counted_and_parked)
        finally:
            await stop(tasks)
        dead = await parked(bus)
    await engine.dispose()

    assert [dict(m.headers)["onefunnel_reason"].split(b":")[0] for m in dead] == [b"unprocessable"]
    assert dict(dead[0].headers)["ce_id"] == str(poison.id).encode()


async def test_while_the_database_is_down_nothing_is_parked_and_everything_is_handled_after(
    tmp_path: Path,
) -> None:
    async with server_database_and_bus(tmp_path, name="outage") as (server, engine, bus):
        tasks = consumers(bus, engine)
        await asyncio.sleep(1)  # both consumers started (metrics reads its gauges first)
        server.stop()
        await bus.publish(TOPICS.topic_source_events, [envelope.encode(source_event("1"), source="/test")])
        await bus.publish(TOPICS.topic_stage_changes, [envelope.encode(transition(), source="/test")])
        async with asyncio.timeout(60):
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(o, Exception) for o in outcomes), outcomes  # stopped, to be restarted
        assert await parked(bus) == []

        server.start()
        await engine.dispose()  # drop the pool's dead connections, as a restarted process would
        await until_handled_then_stop(engine, consumers(bus, engine), events=1)
        assert await parked(bus) == []


async def test_after_the_database_restarts_the_consumers_replace_their_dropped_connections(
    tmp_path: Path,
) -> None:
    """The pool's connections die with the server; the first that fails renews the pool; nothing is parked."""
    async with server_database_and_bus(tmp_path, name="restart") as (server, engine, bus):
        tasks = consumers(bus, engine)
        await bus.publish(TOPICS.topic_source_events, [envelope.encode(source_event("1"), source="/t")])
        await until(lambda: handled(engine, events=1))  # the pool holds a connection now
        server.stop()
        server.start()
        await bus.publish(TOPICS.topic_source_events, [envelope.encode(source_event("2"), source="/t")])
        await bus.publish(TOPICS.topic_stage_changes, [envelope.encode(transition(), source="/t")])
        assert await until_handled_then_stop(engine, tasks, events=2)  # neither had to be restarted
        assert await parked(bus) == []


async def handled(engine: AsyncEngine, *, events: int, transitions: int = 0) -> bool:
    return await count(engine, InboxRow) == events and await count(engine, TransitionRow) == transitions


async def until_handled_then_stop(
    engine: AsyncEngine, tasks: list[asyncio.Task[None]], *, events: int
) -> bool:
    """Wait for sync to handle `events` events and metrics to count one transition; True if none stopped."""
    try:
        await until(lambda: handled(engine, events=events, transitions=1))
        return not any(task.done() for task in tasks)
    finally:
        await stop(tasks)


def _fallbacks(reason: str) -> float:
    """Consumer batches sync handled again one event per transaction, for `reason`."""
    value = sync_instruments.REGISTRY.get_sample_value(
        "onefunnel_sync_batch_fallbacks_total", {"reason": reason}
    )
    return value or 0.0
