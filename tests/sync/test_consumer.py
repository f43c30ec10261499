"""The consumer handles a batch in one transaction; a poison message costs only itself.

A batch with an undecodable message and an event PostgreSQL refuses (an owner id longer than its
column) is rolled back and handled one event at a time: the good events are applied once, the two
bad messages are dead-lettered with their reasons, and the offsets move past all four.
"""

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from onefunnel.shared import envelope
from onefunnel.shared.bus import OutgoingMessage, open_bus
from onefunnel.shared.database import create_engine, migrate
from onefunnel.shared.events import Changes, ObjectType, SourceEvent, SourceEventType, SourceSystem
from onefunnel.shared.funnel import load_funnel
from onefunnel.shared.settings import BusKind, BusSettings, DatabaseSettings, TopicSettings
from onefunnel.shared.stages import Stage
from onefunnel.sync.consumer import run_consumer
from onefunnel.sync.handler import Rules
from onefunnel.sync.tables import InboxRow

RULES = Rules(
    funnel=load_funnel(),
    writable={SourceSystem.HUBSPOT: ObjectType.CONTACT, SourceSystem.SALESFORCE: ObjectType.LEAD},
)


def created(contact: str, **changes: str) -> SourceEvent:
    now = datetime.now(UTC)
    return SourceEvent(
        id=uuid.uuid4(),
        idempotency_key=f"key-{contact}",
        source=SourceSystem.HUBSPOT,
        object_type=ObjectType.CONTACT,
        object_id=contact,
        event_type=SourceEventType.CREATED,
        changes=Changes(stage=Stage.LEAD, stage_raw="lead", **changes),
        occurred_at=now,
        received_at=now,
    )


async def applied(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    async with sessions() as session:
        return list((await session.scalars(select(col(InboxRow.idempotency_key)))).all())


async def test_a_poison_event_is_dead_lettered_alone_and_the_rest_of_its_batch_applied_once(
    postgres_url: str, tmp_path: Path
) -> None:
    engine = create_engine(DatabaseSettings(database_url=postgres_url))
    await migrate(engine, service="sync")
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    topics = TopicSettings(topic_source_events="events", topic_dead_letters="dead")
    bus_settings = BusSettings(bus=BusKind.LOCAL, local_bus_path=tmp_path / "bus.sqlite3")
    messages = [
        envelope.encode(created("1"), source="/test"),
        OutgoingMessage(key=b"2", value=b"not an event", headers=()),
        envelope.encode(created("3", owner_id="x" * 300), source="/test"),  # longer than sync_lead.owner_id
        envelope.encode(created("4"), source="/test"),
    ]
    async with open_bus(bus_settings, topics=topics.all) as bus:
        await bus.publish(topics.topic_source_events, messages)
        consumer = asyncio.create_task(
            run_consumer(
                bus=bus, topics=topics, group="sync", sessions=sessions, rules=RULES, on_change=lambda: None
            )
        )
        dead = []
        try:
            async with (
                asyncio.timeout(60),
                bus.subscribe([topics.topic_dead_letters], group="reader") as reader,
            ):
                async for batch in reader.batches(max_wait=0.2):
                    dead += batch
                    if (len(dead) >= 2 and len(await applied(sessions)) >= 2) or consumer.done():
                        break
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
        async with bus.subscribe([topics.topic_source_events], group="sync") as subscription:
            lag = await subscription.lag()
    keys = await applied(sessions)
    await engine.dispose()

    assert sorted(keys) == ["key-1", "key-4"]
    reasons = sorted(dict(m.headers)["onefunnel_reason"].decode().split(":")[0] for m in dead)
    assert reasons == ["undecodable", "unprocessable"]
    assert lag == 0  # every offset committed, the bad ones too
